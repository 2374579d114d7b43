"""The original ENAS micro (cell) space.

Pham et al., "Efficient Neural Architecture Search via Parameter Sharing",
ICML 2018, and its released `micro_child.py` (github melodyguan/enas). A cell takes the
outputs of the two previous layers and has B nodes; node i applies an op to
each of two inputs (the two cell inputs or earlier nodes) and adds them. The
five ops keep the channel count: separable 3x3 and 5x5 convolutions (ReLU,
depthwise, pointwise, BatchNorm, twice), 3x3 average and max pooling and the
identity. The controller's encoding per node is (input1, op1, input2, op2):
the blocks are `{kind}_{i}_x_input`, `{kind}_{i}_x_op`, `{kind}_{i}_y_input`,
`{kind}_{i}_y_op` for a normal and a reduction cell.

As released: the two cell inputs are first brought to the cell's channels
(ReLU, 1x1 convolution, BatchNorm) and size (a factorized reduction of the
older one after a reduction); a reduction layer doubles the channels and
applies a factorized reduction to its input before its cell, whose ops are
all stride 1; the cell output is a 1x1 convolution (after ReLU) over the
concatenation of the nodes, cell inputs included, that no node uses, then
BatchNorm; the stem has 3x the first stage's filters. The weight-sharing
supernet keeps, as the released code does, separate weights for an op on
each input (one joint choice of input and op per branch), and writes the
output convolution as a sum of per-node 1x1 convolutions, each run only
when its node is unused: the same function as the released code's 1x1
convolution over the gathered rows of one weight matrix.
One difference: the factorized reduction of a reduction layer's input starts
with a ReLU here (tfnas's `factorized_reduce`); the released code has none
there. Left out: auxiliary heads and drop-path (the paper retrains its final
network with them; they are not part of the search).
"""

import keras
import numpy as np

from tfnas.layers.cell_ops import (BN, ENAS_OPS, CellOp, PickInput, Zero, apply_op,
                                   factorized_reduce, factorized_reduce_layers)
from tfnas.spaces.base import register_space
from tfnas.spaces.cells import CIFAR_MEAN, CIFAR_STD, CellSpace

BRANCHES = ("x", "y")


@register_space
class EnasMicroSpace(CellSpace):
    """ENAS's micro space: a normal and a reduction cell of `cell_nodes` nodes.

    `cells_per_stage` normal layers per stage, three stages, a reduction layer
    between them (the released search: 2 per stage, 20 filters, 5 nodes).
    Models take float images in [0, 255] and normalize them inside.

    Example:

    >>> space = EnasMicroSpace(filters=8, cells_per_stage=1, cell_nodes=2)
    >>> choices = {b: space.candidates(b)[0] for b in space.blocks()}
    >>> space.build_model(choices).output_shape
    (None, 10)
    """

    name = "enas_micro"
    defaults = {"num_classes": 10, "input_shape": [32, 32, 3], "filters": 20,
                "cells_per_stage": 2, "cell_nodes": 5, "mean": CIFAR_MEAN, "std": CIFAR_STD}

    positive_keys = ("filters", "cells_per_stage", "cell_nodes")
    why_even = "a factorized reduction splits channels in halves"

    def blocks(self):
        return [f"{kind}_{i}_{branch}_{what}" for kind in ("normal", "reduce")
                for i in range(self.config["cell_nodes"]) for branch in BRANCHES
                for what in ("input", "op")]

    def candidates(self, block):
        index, what = int(block.split("_")[1]), block.split("_")[-1]
        return list(range(index + 2)) if what == "input" else list(ENAS_OPS)

    @staticmethod
    def unused(choices, kind, nodes):
        """Indices (0, 1: the cell inputs; 2 + i: node i) that no node of the cell uses."""
        used = {choices[f"{kind}_{i}_{b}_input"] for i in range(nodes) for b in BRANCHES}
        return [j for j in range(nodes + 2) if j not in used]

    # -- layers -----------------------------------------------------------------------------
    def _calibrate(self, inputs, channels, name):
        """The two cell inputs at the cell's channels and size (`_maybe_calibrate_size`)."""
        older, newer = inputs
        if older.shape[1] != newer.shape[1]:
            older = factorized_reduce(factorized_reduce_layers(channels, f"{name}_in0_reduce"),
                                      older)
        elif older.shape[-1] != channels:
            older = apply_op(older, "conv_1x1", channels, 1, f"{name}_in0")
        if newer.shape[-1] != channels:
            newer = apply_op(newer, "conv_1x1", channels, 1, f"{name}_in1")
        return [older, newer]

    def _cell(self, choices):
        """The derived cell of `choices`: `cell(states, kind, channels, name)`."""
        L, nodes = keras.layers, self.config["cell_nodes"]

        def cell(states, kind, channels, name):
            for i in range(nodes):
                branches = []
                for b in BRANCHES:
                    source = choices[f"{kind}_{i}_{b}_input"]
                    op = choices[f"{kind}_{i}_{b}_op"]
                    branches.append(apply_op(states[source], op, channels, 1,
                                                f"{name}_n{i}_{b}_{source}_{op}"))
                states.append(L.Add(name=f"{name}_n{i}_add")(branches))
            out = [states[j] for j in self.unused(choices, kind, nodes)]
            out = out[0] if len(out) == 1 else L.Concatenate(name=f"{name}_concat")(out)
            # ReLU, 1x1 convolution, BatchNorm: the output of the released cell.
            return apply_op(out, "conv_1x1", channels, 1, f"{name}_out")
        return cell

    def _supernet_cell(self, rule, weights):
        """Every (input, op) of every branch, and a per-node slice of the output convolution
        that runs when the node is unused; the path is chosen by `rule`."""
        L, nodes = keras.layers, self.config["cell_nodes"]

        def mixed(candidates, choices, name, x):
            return self._mixed(rule, weights, candidates, choices, name, x)

        def cell(states, kind, channels, name):
            del kind
            for i in range(nodes):
                branches = []
                for b in BRANCHES:
                    pairs = [(s, op) for s in range(i + 2) for op in ENAS_OPS]
                    branches.append(mixed(
                        [PickInput(s, CellOp(op, channels, name=f"{name}_n{i}_{b}_{s}_{op}"),
                                   name=f"{name}_n{i}_{b}_{s}_{op}_pick") for s, op in pairs],
                        [list(p) for p in pairs], f"{name}_n{i}_{b}", states))
                states.append(L.Add(name=f"{name}_n{i}_add")(branches))
            slices = []
            for j, state in enumerate(states):
                path = keras.Sequential([L.ReLU(name=f"{name}_out{j}_relu"),
                                         L.Conv2D(channels, 1, use_bias=False,
                                                  name=f"{name}_out{j}_conv")],
                                        name=f"{name}_out{j}_path")
                slices.append(mixed([path, Zero(name=f"{name}_out{j}_zero")],
                                    ["unused", "used"], f"{name}_out{j}", state))
            x = L.Add(name=f"{name}_out_sum")(slices)
            return L.BatchNormalization(name=f"{name}_out_bn", **BN)(x)
        return cell

    def _network(self, cell, inputs):
        c, L = self.config, keras.layers
        channels = c["filters"]
        x = L.Conv2D(3 * channels, 3, padding="same", use_bias=False,
                     name="stem_conv")(self._normalize(inputs))
        x = L.BatchNormalization(name="stem_bn", **BN)(x)
        inputs_ = [x, x]
        for kind, name in self._layers():
            if kind == "reduce":
                channels *= 2
                reduced = factorized_reduce(factorized_reduce_layers(channels,
                                                                     f"{name}_reduce"),
                                            inputs_[-1])
                inputs_ = [inputs_[-1], reduced]
            out = cell(self._calibrate(inputs_, channels, name), kind, channels, name)
            inputs_ = [inputs_[-1], out]
        x = L.ReLU(name="head_relu")(inputs_[-1])
        x = L.GlobalAveragePooling2D(name="pool")(x)
        return L.Dense(c["num_classes"], name="classifier")(x)

    def supernet_path(self, choices):
        self.validate_choices(choices)
        nodes, path = self.config["cell_nodes"], {}
        for kind, name in self._layers():
            for i in range(nodes):
                for b in BRANCHES:
                    path[f"{name}_n{i}_{b}"] = [choices[f"{kind}_{i}_{b}_input"],
                                                choices[f"{kind}_{i}_{b}_op"]]
            unused = self.unused(choices, kind, nodes)
            for j in range(nodes + 2):
                path[f"{name}_out{j}"] = "unused" if j in unused else "used"
        return path

    def inherit_weights(self, model, supernet, choices):
        self.validate_choices(choices)
        nodes = self.config["cell_nodes"]
        names = {layer.name for layer in model.layers}
        outer = {layer.name for layer in supernet.layers}
        for layer in model.layers:  # stem, calibrations, reductions, output BN, classifier
            if layer.weights and layer.name in outer:
                layer.set_weights(supernet.get_layer(layer.name).get_weights())
        for kind, name in self._layers():
            for i in range(nodes):
                for b in BRANCHES:
                    source = choices[f"{kind}_{i}_{b}_input"]
                    op = choices[f"{kind}_{i}_{b}_op"]
                    mixed_op = supernet.get_layer(f"{name}_n{i}_{b}")
                    cell_op = mixed_op.candidates[mixed_op.choices.index([source, op])].layer
                    for suffix, part in cell_op.parts.items():
                        target = f"{name}_n{i}_{b}_{source}_{op}_{suffix}"
                        if part.weights and target in names:
                            model.get_layer(target).set_weights(part.get_weights())
            # The output convolution: the rows of the unused nodes' slices, concatenated.
            kernels = [supernet.get_layer(f"{name}_out{j}").candidates[0]
                       .get_layer(f"{name}_out{j}_conv").get_weights()[0]
                       for j in self.unused(choices, kind, nodes)]
            model.get_layer(f"{name}_out_conv").set_weights([np.concatenate(kernels, axis=2)])
