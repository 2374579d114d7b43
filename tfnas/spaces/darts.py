"""The DARTS cell space.

Liu, Simonyan and Yang, "DARTS: Differentiable Architecture Search", ICLR
2019, and its released code (cnn/model_search.py, cnn/model.py,
cnn/operations.py, cnn/genotypes.py). A cell takes the outputs of the two
previous cells (brought to C channels by ReLU-1x1 conv-BN, or a factorized
reduction after a reduction cell) and has `nodes` intermediate nodes; node i
sums ops on the two inputs and every earlier node, and the cell output
concatenates the intermediate nodes. Its edges are the blocks,
`{kind}_n{i}_in{j}` for the normal and the reduction cell, each one of the
8 ops `DARTS_OPS` ("none" leaves the edge out). Reductions sit at 1/3 and
2/3 of the depth and double the channels; their ops on the cell inputs have
stride 2 (`skip_connect` is then a factorized reduction).

`build_supernet` is the search network (all edges mixed, BatchNorm without
scale and offset, a BatchNorm after each pooling op, as the released search
code); every normal cell uses the first normal cell's logits and every
reduction cell the first reduction cell's. `derive` is DARTS's rule: each
node keeps its two strongest incoming edges, an edge's strength being its
best op other than none, with that op. `build_model` is the evaluation
network of a genotype; `genotype_choices` and `choices_genotype` convert
from and to DARTS's `Genotype(normal=[(op, input), ...], reduce=[...])`.
"""

import itertools
import re

import keras
from keras import ops

from tfnas.layers import mixing as mixing_rules
from tfnas.layers.cell_ops import (BN, DARTS_OPS, CellOp, DropPath, PickInput, Zero, apply_op,
                                   batch_norm, factorized_reduce, factorized_reduce_layers)
from tfnas.spaces.base import SearchSpace, SearchSpaceError, log_probability, register_space
from tfnas.spaces.cells import (CIFAR_MEAN, CIFAR_STD, check_positive_integers, keras3_only,
                                no_latency_table, normalize, shared_mixed_op)

KINDS = ("normal", "reduce")

# DARTS (second order), the cells of the paper's CIFAR-10 results (genotypes.py, DARTS_V2).
DARTS_V2 = {
    "normal": [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0),
               ("sep_conv_3x3", 1), ("sep_conv_3x3", 1), ("skip_connect", 0),
               ("skip_connect", 0), ("dil_conv_3x3", 2)],
    "reduce": [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2),
               ("max_pool_3x3", 1), ("max_pool_3x3", 0), ("skip_connect", 2),
               ("skip_connect", 2), ("max_pool_3x3", 1)],
}


def edge_block(kind, i, j):
    return f"{kind}_n{i}_in{j}"


def genotype_choices(genotype, nodes=4):
    """`{block: op}` of a DARTS genotype `{"normal": [(op, input)] * 2 * nodes,
    "reduce": ...}` (a `Genotype`'s fields, or a dict with them); its edges not in the
    genotype are "none".

    Example:

    >>> choices = genotype_choices(DARTS_V2)
    >>> choices["normal_n3_in2"], choices["normal_n3_in1"]
    ('dil_conv_3x3', 'none')
    """
    shape = ('a genotype is {"normal": [[op, input], ...], "reduce": [...]} (or a '
             "Genotype), two pairs per node")
    if isinstance(genotype, dict):
        missing = [k for k in KINDS if k not in genotype]
        cells = {k: genotype.get(k) for k in KINDS}
    else:
        missing = [k for k in KINDS if not hasattr(genotype, k)]
        cells = {k: getattr(genotype, k, None) for k in KINDS}
    if missing:
        raise SearchSpaceError(f"The DARTS genotype has no {' and '.join(map(repr, missing))} "
                               f"cell; {shape}.")
    choices = {edge_block(kind, i, j): "none" for kind in KINDS for i in range(nodes)
               for j in range(i + 2)}
    for kind in KINDS:
        if not isinstance(cells[kind], (list, tuple)) or not all(
                isinstance(p, (list, tuple)) and len(p) == 2 for p in cells[kind]):
            raise SearchSpaceError(f"The {kind} cell of the DARTS genotype is "
                                   f"{cells[kind]!r}; {shape}, each pair [op, input].")
        pairs = [tuple(p) for p in cells[kind]]
        if len(pairs) != 2 * nodes:
            raise SearchSpaceError(f"A DARTS genotype's {kind} cell lists two (op, input) "
                                   f"pairs for each of its {nodes} nodes ({2 * nodes}); got "
                                   f"{len(pairs)}.")
        for k, (op, j) in enumerate(pairs):
            i = k // 2
            if not isinstance(op, str) or op not in DARTS_OPS or op == "none":
                raise SearchSpaceError(f"Unknown op {op!r} in the {kind} cell of the genotype; "
                                       f"DARTS ops are {list(DARTS_OPS[1:])}.")
            if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < i + 2:
                raise SearchSpaceError(f"Node {i} of the {kind} cell takes input {j!r}; it can "
                                       f"take 0..{i + 1} (the two cell inputs, earlier nodes).")
            block = edge_block(kind, i, j)
            if choices[block] != "none":
                raise SearchSpaceError(f"Node {i} of the {kind} cell takes input {j} twice.")
            choices[block] = op
    return choices


def choices_genotype(choices, nodes=4):
    """DARTS's genotype (`{"normal": [(op, input)], "normal_concat", "reduce", ...}`) of
    `{block: op}`, edges in input order."""
    genotype = {}
    for kind in KINDS:
        genotype[kind] = [(choices[edge_block(kind, i, j)], j) for i in range(nodes)
                          for j in range(i + 2) if choices[edge_block(kind, i, j)] != "none"]
        genotype[f"{kind}_concat"] = list(range(2, nodes + 2))
    return genotype


class StrongestEdges(keras.layers.Layer):
    """Sums the two edges of a node whose best op other than none is most probable under
    the logits of `edge_ops` (their owners'): DARTS's derivation, applied at every step in
    a derived cell (`derived_cells`). Like the ops whose logits it reads, it lives only
    in a search network and is not serialized."""

    def __init__(self, edge_ops, keep=2, **kwargs):
        super().__init__(**kwargs)
        object.__setattr__(self, "_edge_ops", list(edge_ops))  # not tracked: not its weights
        self.keep = min(int(keep), len(edge_ops))

    def call(self, terms):
        strength = ops.stack([ops.max(ops.softmax(ops.stop_gradient(op.logits))[1:])
                              for op in self._edge_ops])
        mask = ops.sum(ops.one_hot(ops.top_k(strength, self.keep)[1], len(self._edge_ops)),
                       axis=0)
        total = mask[0] * terms[0]
        for k in range(1, len(terms)):
            total = total + mask[k] * terms[k]
        return total

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@register_space
class DartsSpace(SearchSpace):
    """DARTS's space: a normal and a reduction cell of `nodes` nodes, `cells` cells.

    The search network of the paper is `filters=16, cells=8`; its evaluation
    network `filters=36, cells=20`. `build_model` makes a network of `filters`
    and `cells`, or of `evaluation` = `{"filters": 36, "cells": 20}` when given:
    then the searched architecture is built, and its cost counted, at the size
    it is deployed at, while the search runs at `filters` and `cells`. Models
    take float images in [0, 255] and normalize them inside.

    Example:

    >>> space = DartsSpace(filters=4, cells=3)
    >>> space.build_model(genotype_choices(DARTS_V2)).output_shape
    (None, 10)
    """

    name = "darts"
    defaults = {"num_classes": 10, "input_shape": [32, 32, 3], "filters": 16, "cells": 8,
                "nodes": 4, "stem_multiplier": 3, "mean": CIFAR_MEAN, "std": CIFAR_STD,
                # DCA-NAS's savers (search network only; see build_supernet)
                "bottleneck": 1, "share_source_ops": False, "derived_cells": False,
                # {"filters", "cells"} of the evaluation network that build_model makes and
                # costs count (DCA-NAS's budget is the deployed network's), when they are not
                # the search network's
                "evaluation": None}
    costs_on_derived_models = True  # the search network's BatchNorms have no parameters

    def __init__(self, **config):
        super().__init__(**config)
        c = self.config
        check_positive_integers(self, ("filters", "cells", "nodes", "stem_multiplier",
                                       "bottleneck"))
        for key in ("share_source_ops", "derived_cells"):
            if not isinstance(c[key], bool):
                raise SearchSpaceError(f"{self.name}: {key} is true or false, got {c[key]!r}.")
        if c["filters"] % (2 * c["bottleneck"]):
            raise SearchSpaceError(
                f"{self.name}: bottleneck={c['bottleneck']} must divide filters={c['filters']} "
                "into an even width (the ops run at filters/bottleneck channels, and a "
                "factorized reduction splits them in halves); choose a divisor of "
                f"{c['filters'] // 2}.")
        evaluation = c["evaluation"]
        if evaluation is not None:
            if not (isinstance(evaluation, dict) and set(evaluation) == {"filters", "cells"}
                    and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                            for v in evaluation.values())):
                raise SearchSpaceError(f"{self.name}: evaluation is null or "
                                       "{\"filters\": F, \"cells\": N} with positive "
                                       f"integers, got {evaluation!r}.")
        for size in (c, evaluation or c):
            if size["cells"] < 3:
                raise SearchSpaceError(f"{self.name}: cells={size['cells']}: a DARTS network "
                                       "has reduction cells at 1/3 and 2/3 of its depth and "
                                       "needs at least 3 cells.")
            if size["filters"] % 2:
                raise SearchSpaceError(f"{self.name}: filters={size['filters']} must be even: "
                                       "a factorized reduction splits channels in halves.")

    def blocks(self):
        return [edge_block(kind, i, j) for kind in KINDS for i in range(self.config["nodes"])
                for j in range(i + 2)]

    def candidates(self, block):
        del block
        return list(DARTS_OPS)

    def validate_architecture(self, choices):
        """DARTS's rule for an architecture (a document, a derived or drawn cell; the
        networks costs are counted on may break it): each node takes exactly two inputs,
        ops other than none."""
        for kind in KINDS:
            for i in range(self.config["nodes"]):
                taken = [j for j in range(i + 2) if choices[edge_block(kind, i, j)] != "none"]
                if len(taken) != 2:
                    raise SearchSpaceError(
                        f"Node {i} of the {kind} cell takes {len(taken)} inputs {taken}; a "
                        "DARTS node takes exactly two (the other edges are 'none').")

    def hyperparameters(self, hp):
        """Per node, the pair of inputs (`{kind}_n{i}_inputs`, an index into the pairs) and
        the op on each (`{kind}_n{i}_op0`, `_op1`): every draw is a valid DARTS cell."""
        choices = {}
        for kind in KINDS:
            for i in range(self.config["nodes"]):
                pairs = list(itertools.combinations(range(i + 2), 2))
                pair = pairs[hp.Choice(f"{kind}_n{i}_inputs", list(range(len(pairs))))]
                for j in range(i + 2):
                    choices[edge_block(kind, i, j)] = "none"
                for k, j in enumerate(pair):
                    choices[edge_block(kind, i, j)] = hp.Choice(f"{kind}_n{i}_op{k}",
                                                                list(DARTS_OPS[1:]))
        return choices

    def derivation_groups(self, probabilities):
        """DARTS's rule as groups: each node of each cell kind takes two incoming edges with
        one op other than none each (the other edges none). The most probable pair is the
        two edges whose best op other than none is strongest, with those ops."""
        groups = []
        for kind in KINDS:
            for i in range(self.config["nodes"]):
                inputs = [edge_block(kind, i, j) for j in range(i + 2)]
                # DARTS_OPS[0] is none.
                edge_options = {b: [(log_probability(probabilities[b][k]), op)
                                    for k, op in enumerate(DARTS_OPS) if k] for b in inputs}
                group = []
                for first, second in itertools.combinations(inputs, 2):
                    for (s1, op1), (s2, op2) in itertools.product(edge_options[first],
                                                                  edge_options[second]):
                        choices = dict.fromkeys(inputs, "none")
                        choices.update({first: op1, second: op2})
                        group.append((s1 + s2, choices))
                groups.append(group)
        return groups

    def block_of_layer(self, name):
        match = re.match(r"cell\d+_((?:normal|reduce)_n\d+_in\d+)_", name)
        return match.group(1) if match else None

    def genotype(self, choices):
        self.validate_choices(choices)
        return choices_genotype(choices, self.config["nodes"])

    # -- layers -----------------------------------------------------------------------------
    def _cells(self, n):
        """`(kind, index)` of every cell of a network of `n` cells, in order."""
        for k in range(n):
            yield ("reduce" if k in (n // 3, 2 * n // 3) else "normal"), k

    def _network(self, cell, inputs, affine, filters, cells):
        c, L = self.config, keras.layers
        x = normalize(inputs, c)
        x = L.Conv2D(c["stem_multiplier"] * filters, 3, padding="same", use_bias=False,
                     name="stem_conv")(x)
        x = L.BatchNormalization(name="stem_bn", **BN)(x)
        states, channels, reduced_before = [x, x], filters, False
        for kind, k in self._cells(cells):
            if kind == "reduce":
                channels *= 2
            name = f"cell{k}"
            older, newer = states
            if reduced_before:
                older = factorized_reduce(factorized_reduce_layers(channels, f"{name}_pre0",
                                                                   affine), older)
            else:
                older = apply_op(older, "nor_conv_1x1", channels, 1, f"{name}_pre0", affine)
            newer = apply_op(newer, "nor_conv_1x1", channels, 1, f"{name}_pre1", affine)
            nodes = cell([older, newer], kind, channels, name)
            out = L.Concatenate(name=f"{name}_concat")(nodes)
            states, reduced_before = [states[1], out], kind == "reduce"
        x = L.GlobalAveragePooling2D(name="pool")(states[1])
        return L.Dense(c["num_classes"], name="classifier")(x)

    def build_model(self, choices, name=None, layer_set=None, fold_batch_norms=False):
        keras3_only(self, layer_set)
        del fold_batch_norms  # folding is deploy's (tfnas.deploy.quantize / lowering)
        return self._evaluation_network(choices, name)

    def training_model(self, choices, drop_path=0.0, auxiliary_weight=0.0):
        """DARTS's evaluation network in training (`cnn/model.py`): drop-path after every
        op but the identity, and the auxiliary head (`AuxiliaryHeadCIFAR`: ReLU, 5x5
        average pooling at stride 3, 1x1 conv to 128, BN, ReLU, 2x2 conv to 768, BN,
        ReLU, linear) on the output of the cell at 2/3 of the depth."""
        model = self._evaluation_network(choices, None, drop_path)
        if not auxiliary_weight:
            return model, None
        size = self.config["evaluation"] or self.config
        L, at = keras.layers, 2 * size["cells"] // 3
        x = L.ReLU(name="aux_relu0")(model.get_layer(f"cell{at}_concat").output)
        x = L.AveragePooling2D(5, strides=3, name="aux_pool")(x)
        for k, (filters, kernel) in enumerate(((128, 1), (768, 2))):
            x = L.Conv2D(filters, kernel, use_bias=False, name=f"aux_conv{k}")(x)
            x = L.BatchNormalization(name=f"aux_bn{k}", **BN)(x)
            x = L.ReLU(name=f"aux_relu{k + 1}")(x)
        x = L.Flatten(name="aux_flatten")(x)
        return model, L.Dense(self.config["num_classes"], name="aux_classifier")(x)

    def _evaluation_network(self, choices, name, drop_path=0.0):
        self.validate_choices(choices)
        L = keras.layers

        def cell(states, kind, channels, name):
            states = list(states)
            for i in range(self.config["nodes"]):
                terms = []
                for j in range(i + 2):
                    op = choices[edge_block(kind, i, j)]
                    if op == "none":
                        continue
                    stride = 2 if kind == "reduce" and j < 2 else 1
                    layer_name = f"{name}_{edge_block(kind, i, j)}_{op}"
                    y = apply_op(states[j], op, channels, stride, layer_name)
                    if drop_path and not (op == "skip_connect" and stride == 1):
                        y = DropPath(drop_path, name=f"{layer_name}_drop")(y)
                    terms.append(y)
                if not terms:  # every input edge is none
                    terms = [Zero(2 if kind == "reduce" else 1,
                                  name=f"{name}_n{i}_zero")(states[1])]
                states.append(terms[0] if len(terms) == 1
                              else L.Add(name=f"{name}_n{i}_add")(terms))
            return states[2:]

        inputs = keras.Input(tuple(self.config["input_shape"]), name="images")
        size = self.config["evaluation"] or self.config
        return keras.Model(inputs, self._network(cell, inputs, True, size["filters"],
                                                 size["cells"]),
                           name=name or self.name)

    def build_supernet(self, mixing="softmax"):
        """The DARTS search network: a `MixedOp` over the 8 ops on every edge of every cell;
        cells of a kind share the first one's logits.

        DCA-NAS's savers, set in the space config, change only this network:
        `bottleneck: r` runs the ops at C/r channels between a 1x1 reduction of each
        source node and a 1x1 expansion of each node (ReLU-conv-BN, as DARTS's
        preprocessing); `share_source_ops` computes each op once per source node,
        for every node it feeds (the edges mix the shared outputs with their own
        weights); `derived_cells` makes every cell but the first of each kind the
        cell DARTS would derive now: each edge runs only its best op other than none
        (`ArgmaxMixing`) and each node sums its two strongest edges
        (`StrongestEdges`), so the architecture learns only in the first cells.
        """
        rule = mixing_rules.get(mixing)
        derived = self.config["derived_cells"]
        # A derived cell's edge runs its best op other than none (DARTS_OPS[0]).
        copy_rule = mixing_rules.get({"type": "argmax", "exclude": [0]}) if derived else rule
        r, share = self.config["bottleneck"], self.config["share_source_ops"]
        owners, weights = {}, {}

        def candidate(op, channels, stride, name):
            layer = CellOp(op, channels, stride, affine=False, name=name)
            if "pool" not in op:
                return layer
            return keras.Sequential([layer, batch_norm(f"{name}_bn", affine=False, fused=True)],
                                    name=f"{name}_seq")

        def cell(states, kind, channels, name):
            states, width = list(states), channels // r
            carries = edge_block(kind, 0, 0) not in owners  # the first cell of its kind
            cell_rule = rule if carries else copy_rule
            sources, shared = {}, {}

            def source(j):
                if j not in sources:
                    sources[j] = states[j] if r == 1 else apply_op(
                        states[j], "nor_conv_1x1", width, 1, f"{name}_reduce{j}", affine=False)
                return sources[j]

            for i in range(self.config["nodes"]):
                terms, edge_ops = [], []
                for j in range(i + 2):
                    stride = 2 if kind == "reduce" and j < 2 else 1
                    if share and carries:
                        if j not in shared:
                            shared[j] = [candidate(op, width, stride, f"{name}_in{j}_{op}")(
                                source(j)) for op in DARTS_OPS]
                        make, x = (lambda op_name: [PickInput(k, name=f"{op_name}_{op}")
                                                    for k, op in enumerate(DARTS_OPS)],
                                   shared[j])
                    else:
                        make, x = (lambda op_name, s=stride: [
                            candidate(op, width, s, f"{op_name}_{op}") for op in DARTS_OPS],
                            source(j))
                    mixed = shared_mixed_op(owners, edge_block(kind, i, j), name, make,
                                            cell_rule, list(DARTS_OPS))
                    y, weights[mixed.name] = mixed(x)
                    terms.append(y)
                    edge_ops.append(mixed)
                if derived and not carries:  # DARTS's rule: the node keeps two edges
                    node = StrongestEdges(edge_ops, name=f"{name}_n{i}_strongest")(terms)
                else:
                    node = keras.layers.Add(name=f"{name}_n{i}_add")(terms)
                if r > 1:
                    node = apply_op(node, "nor_conv_1x1", channels, 1, f"{name}_expand{i}",
                                    affine=False)
                states.append(node)
            return states[2:]

        inputs = keras.Input(tuple(self.config["input_shape"]), name="images")
        logits = self._network(cell, inputs, False, self.config["filters"],
                               self.config["cells"])
        return keras.Model(inputs, (logits, weights), name=f"{self.name}_supernet")

    def inherit_weights(self, model, supernet, choices):
        raise SearchSpaceError(f"{self.name}'s search network normalizes without scale and "
                               "offset and shares its architecture across cells: train the "
                               "derived network from scratch (train.inherit: false), as DARTS "
                               "does.")

    def latency_ops(self):
        no_latency_table(self)
