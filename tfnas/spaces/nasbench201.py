"""The NAS-Bench-201 cell space.

Dong and Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural
Architecture Search", ICLR 2020, and its model code (xautodl/models:
cell_infers/tiny_network.py, cell_infers/cells.py, cell_operations.py). A cell
has 4 nodes; node i sums an op on every earlier node, so the 6 edges are the
blocks, `n{i}_in{j}` (node i, input j), each one of the 5 ops `NB201_OPS`.
The network: a 3x3 stem convolution with BatchNorm, three stages of
`cells_per_stage` cells at C, 2C and 4C channels, a residual block between
stages (ReLU-conv3x3-BN at stride 2, ReLU-conv3x3-BN, shortcut 2x2 average pool
and 1x1 convolution), BatchNorm, ReLU, global pooling, a linear classifier.
Every cell has the same architecture; the supernet's cells share one set of
architecture logits (those of the first cell's mixed ops, named by the blocks).

Architectures read and write the benchmark's own strings, so results can be
looked up in its tables: `arch_string(choices)` and `choices_from_string(s)`.
"""

import itertools
import re

import keras

from tfnas.layers import mixing as mixing_rules
from tfnas.layers.cell_ops import BN, NB201_OPS, CellOp, Zero, apply_op
from tfnas.spaces.base import (SearchSpace, SearchSpaceError, log_probability,
                               register_space)
from tfnas.spaces.cells import (CIFAR_MEAN, CIFAR_STD, check_positive_integers, keras3_only,
                                no_latency_table, normalize, shared_mixed_op)

NODES = 4
EDGES = tuple((i, j) for i in range(1, NODES) for j in range(i))


def edge_block(i, j):
    return f"n{i}_in{j}"


def arch_string(choices):
    """NAS-Bench-201's string of `{block: op}`.

    Example:

    >>> arch_string({edge_block(i, j): "skip_connect" if j else "none" for i, j in EDGES})
    '|none~0|+|none~0|skip_connect~1|+|none~0|skip_connect~1|skip_connect~2|'
    """
    return "+".join("|" + "|".join(f"{choices[edge_block(i, j)]}~{j}" for j in range(i)) + "|"
                    for i in range(1, NODES))


def choices_from_string(text):
    """`{block: op}` of a NAS-Bench-201 string: per node ('+'-separated), `|op~input|` for
    each earlier node in order.

    Example:

    >>> choices_from_string("|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|"
    ...                     "+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|")["n2_in1"]
    'avg_pool_3x3'
    """
    if not isinstance(text, str):
        raise SearchSpaceError(f"A NAS-Bench-201 architecture is a string, got {text!r}.")
    nodes = text.split("+")
    counts = [len([e for e in n.split("|") if e]) for n in nodes]
    if counts != list(range(1, NODES)):
        raise SearchSpaceError(
            f"A NAS-Bench-201 string has {NODES - 1} nodes ('+'-separated) with 1, 2 and 3 "
            f"edges; {text!r} has {len(nodes)} nodes with {counts} edges.")
    choices = {}
    for i, node in enumerate(nodes, start=1):
        if not re.fullmatch(r"\|([^|~]+~\d+\|)+", node):
            raise SearchSpaceError(f"Node {i} of {text!r} is not '|op~input|...|'.")
        for j, edge in enumerate(e for e in node.split("|") if e):
            op, source = edge.split("~")
            if int(source) != j:
                raise SearchSpaceError(f"Edge {j} of node {i} in {text!r} names input "
                                       f"{source}; NAS-Bench-201 lists inputs 0..{i - 1} in "
                                       "order.")
            if op not in NB201_OPS:
                raise SearchSpaceError(f"Unknown op {op!r} in {text!r}; NAS-Bench-201 ops are "
                                       f"{list(NB201_OPS)}.")
            choices[edge_block(i, j)] = op
    return choices


@register_space
class NasBench201Space(SearchSpace):
    """NAS-Bench-201: one cell of 6 searched edges, repeated in three stages.

    `filters` (C, 16 in the benchmark) and `cells_per_stage` (N, 5). Models take
    float images in [0, 255] and normalize them inside.

    Example:

    >>> space = NasBench201Space(filters=8, cells_per_stage=1)
    >>> choices = choices_from_string("|nor_conv_3x3~0|+|none~0|skip_connect~1|"
    ...                               "+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|")
    >>> space.build_model(choices).output_shape
    (None, 10)
    """

    name = "nasbench201"
    defaults = {"num_classes": 10, "input_shape": [32, 32, 3], "filters": 16,
                "cells_per_stage": 5, "mean": CIFAR_MEAN, "std": CIFAR_STD}
    costs_on_derived_models = True  # the supernet's BatchNorms have no parameters

    def __init__(self, **config):
        super().__init__(**config)
        check_positive_integers(self, ("filters", "cells_per_stage"))

    def blocks(self):
        return [edge_block(i, j) for i, j in EDGES]

    def candidates(self, block):
        del block
        return list(NB201_OPS)

    def validate_choices(self, choices):
        if isinstance(choices, str):
            raise SearchSpaceError("Give NAS-Bench-201 strings through "
                                   "tfnas.spaces.nasbench201.choices_from_string.")
        super().validate_choices(choices)

    def derivation_groups(self, probabilities):
        """One group of every architecture (5**6): a network's cost is not a sum over its
        edges, as an edge into a node that reaches no output is left out."""
        blocks = self.blocks()
        options = [[(log_probability(p), op) for op, p in zip(NB201_OPS, probabilities[b])]
                   for b in blocks]
        return [[(sum(s for s, _ in combination), dict(zip(blocks, (op for _, op in combination))))
                 for combination in itertools.product(*options)]]

    def effective_choices(self, choices):
        """Edges into a node whose value reaches no output are none: the Keras network
        leaves them out (the benchmark's PyTorch model keeps them and counts them)."""
        effective = dict(choices)
        reaches = {NODES - 1}
        for j in range(NODES - 2, 0, -1):
            if any(effective.get(edge_block(i, j), "none") != "none" and i in reaches
                   for i in range(j + 1, NODES)):
                reaches.add(j)
        for i, j in EDGES:
            if i not in reaches and edge_block(i, j) in effective:
                effective[edge_block(i, j)] = "none"
        return effective

    def block_of_layer(self, name):
        match = re.match(r"stage\d+_cell\d+_(n\d+_in\d+)_", name)
        return match.group(1) if match else None

    def arch_string(self, choices):
        self.validate_choices(choices)
        return arch_string(choices)

    # -- layers -----------------------------------------------------------------------------
    def _cells(self):
        """`(stage, name)` of every cell, in order."""
        for stage in range(3):
            for k in range(self.config["cells_per_stage"]):
                yield stage, f"stage{stage + 1}_cell{k + 1}"

    def _network(self, cell, inputs):
        c, L = self.config, keras.layers
        x = normalize(inputs, c)
        x = L.Conv2D(c["filters"], 3, padding="same", use_bias=False, name="stem_conv")(x)
        x = L.BatchNormalization(name="stem_bn", **BN)(x)
        for stage, name in self._cells():
            channels = c["filters"] * 2 ** stage
            if x.shape[-1] != channels:
                x = self._residual_block(x, channels, f"reduce{stage}")
            x = cell(x, channels, name)
        x = L.BatchNormalization(name="head_bn", **BN)(x)
        x = L.ReLU(name="head_relu")(x)
        x = L.GlobalAveragePooling2D(name="pool")(x)
        return L.Dense(c["num_classes"], name="classifier")(x)

    @staticmethod
    def _residual_block(x, channels, name):
        """NAS-Bench-201's `ResNetBasicblock(C, 2C, stride=2)`."""
        L = keras.layers
        y = x
        for k, stride in ((0, 2), (1, 1)):
            y = apply_op(y, "nor_conv_3x3", channels, stride, f"{name}_conv{k}")
        shortcut = L.AveragePooling2D(2, name=f"{name}_shortcut_pool")(x)
        shortcut = L.Conv2D(channels, 1, use_bias=False, name=f"{name}_shortcut_conv")(shortcut)
        return L.Add(name=f"{name}_add")([shortcut, y])

    def build_model(self, choices, name=None, layer_set=None, fold_batch_norms=False):
        keras3_only(self, layer_set)
        del fold_batch_norms  # folding is deploy's (tfnas.deploy.quantize / lowering)
        self.validate_choices(choices)
        L = keras.layers

        def cell(x, channels, cell_name):
            nodes = [x]
            for i in range(1, NODES):
                terms = []
                for j in range(i):
                    op = choices[edge_block(i, j)]
                    if op == "none":
                        continue
                    terms.append(apply_op(nodes[j], op, channels, 1,
                                          f"{cell_name}_{edge_block(i, j)}_{op}"))
                if not terms:  # every input edge is none
                    terms = [Zero(name=f"{cell_name}_n{i}_zero")(x)]
                nodes.append(terms[0] if len(terms) == 1
                             else L.Add(name=f"{cell_name}_n{i}_add")(terms))
            return nodes[-1]

        inputs = keras.Input(tuple(self.config["input_shape"]), name="images")
        return keras.Model(inputs, self._network(cell, inputs), name=name or self.name)

    def build_supernet(self, mixing="softmax"):
        """Every edge of every cell a `MixedOp` over the 5 ops (BatchNorm without scale and
        offset, as the benchmark's search cells); the cells share the first cell's logits."""
        rule = mixing_rules.get(mixing)
        owners = {}
        weights = {}

        def cell(x, channels, cell_name):
            nodes = [x]
            for i in range(1, NODES):
                terms = []
                for j in range(i):
                    mixed = shared_mixed_op(
                        owners, edge_block(i, j), cell_name,
                        lambda name: [CellOp(op, channels, affine=False, name=f"{name}_{op}")
                                      for op in NB201_OPS],
                        rule, list(NB201_OPS))
                    y, weights[mixed.name] = mixed(nodes[j])
                    terms.append(y)
                nodes.append(keras.layers.Add(name=f"{cell_name}_n{i}_add")(terms)
                             if len(terms) > 1 else terms[0])
            return nodes[-1]

        inputs = keras.Input(tuple(self.config["input_shape"]), name="images")
        logits = self._network(cell, inputs)
        return keras.Model(inputs, (logits, weights), name=f"{self.name}_supernet")

    def inherit_weights(self, model, supernet, choices):
        raise SearchSpaceError(f"{self.name}'s supernet normalizes without scale and offset "
                               "and shares ops across cells: train the derived network from "
                               "scratch (train.inherit: false), as the benchmark does.")

    def latency_ops(self):
        no_latency_table(self)
