"""ShuffleNASNets: ENAS cells in a ShuffleNet V2 network.

Bruegge, Liu, Swadzba, Wagner, "ShuffleNASNets: Efficient CNN models through
modified Efficient Neural Architecture Search" (github melodyguan/enas). A cell has B
blocks; block i applies one of six ops to one input (the cell input or an
earlier block), and the cell output is the sum of the blocks. Ops keep the
channel count and have no biases: separable 3x3 and 5x5 convolutions (ReLU,
depthwise, pointwise, BatchNorm, applied twice, as in ENAS), 3x3 max and min
pooling (min = -maxpool(-x)), identity and a 1x1 convolution. A normal layer
splits its channels in halves, runs the cell on one, concatenates the other
and shuffles; a reduction layer runs the reduction cell (stride 2 on the cell
input) on all channels beside a factorized reduction of them (two 1x1 stride-2
convolutions, the second shifted by a pixel), doubling the channels.

One normal and one reduction cell architecture hold for the whole network:
the blocks are `normal_{i}_input`, `normal_{i}_op`, `reduce_{i}_input`,
`reduce_{i}_op`. The paper's cells are in a figure its text lacks; the cells
tfnas ships are in `CELL_A` and `CELL_B`, with their parameter counts in the
documentation (docs/spaces/shufflenasnet.md) next to the paper's.
"""

import keras

from tfnas.layers.cell_ops import (BN, CELL_OPS, CellOp, PickInput, apply_op,
                                   factorized_reduce, factorized_reduce_layers)
from tfnas.layers.channel_shuffle import ChannelShuffle, ChannelSplit
from tfnas.spaces.base import register_space
from tfnas.spaces.cells import CIFAR_MEAN, CIFAR_STD, CellSpace

OPS = CELL_OPS

# The cells tfnas ships (five blocks each), as (input, op) per block.
CELL_A = {"normal": [(0, "sep_conv_3x3"), (0, "identity"), (1, "sep_conv_3x3"),
                     (0, "sep_conv_3x3"), (3, "identity")],
          "reduce": [(0, "sep_conv_3x3"), (0, "max_pool_3x3"), (1, "sep_conv_3x3"),
                     (0, "min_pool_3x3"), (2, "identity")]}
CELL_B = {"normal": [(0, "sep_conv_3x3"), (0, "identity"), (1, "sep_conv_3x3"),
                     (0, "max_pool_3x3"), (3, "sep_conv_3x3")],
          "reduce": [(0, "sep_conv_5x5"), (0, "max_pool_3x3"), (1, "sep_conv_3x3"),
                     (0, "min_pool_3x3"), (2, "identity")]}
# The paper's models: (cell, normal cells per stage, filters) and its parameter counts.
PAPER_MODELS = {"A_12_36": (CELL_A, 4, 36, 0.24e6), "A_15_48": (CELL_A, 5, 48, 0.47e6),
                "A_15_64": (CELL_A, 5, 64, 0.80e6), "B_15_96": (CELL_B, 5, 96, 1.79e6),
                "B_15_128": (CELL_B, 5, 128, 3.10e6)}


def cell_choices(cell):
    """`{block: choice}` of a cell pair given as `{"normal": [(input, op)], "reduce": ...}`."""
    choices = {}
    for kind in ("normal", "reduce"):
        for i, (source, op) in enumerate(cell[kind]):
            choices[f"{kind}_{i}_input"], choices[f"{kind}_{i}_op"] = source, op
    return choices


@register_space
class ShuffleNasNetSpace(CellSpace):
    """The ShuffleNASNet cell space: a normal and a reduction cell of `cell_blocks` blocks.

    `cells_per_stage` normal layers per stage, three stages, a reduction layer
    between them ("12+2 cells" is 4 per stage); `filters` channels in the first
    stage. Models take float images in [0, 255] and normalize them inside.

    Example:

    >>> space = ShuffleNasNetSpace(filters=36, cells_per_stage=4)
    >>> model = space.build_model(cell_choices(CELL_A))
    >>> model.output_shape
    (None, 10)
    """

    name = "shufflenasnet"
    defaults = {"num_classes": 10, "input_shape": [32, 32, 3], "filters": 36,
                "cells_per_stage": 4, "cell_blocks": 5, "mean": CIFAR_MEAN, "std": CIFAR_STD}

    positive_keys = ("filters", "cells_per_stage", "cell_blocks")
    why_even = "a normal layer splits its channels in halves"

    def blocks(self):
        return [f"{kind}_{i}_{what}" for kind in ("normal", "reduce")
                for i in range(self.config["cell_blocks"]) for what in ("input", "op")]

    def candidates(self, block):
        _, index, what = block.split("_")
        return list(range(int(index) + 1)) if what == "input" else list(OPS)

    # -- layers -----------------------------------------------------------------------------
    def _cell(self, choices):
        """The derived cell of `choices`: `cell(x, kind, channels, stride, name)`."""
        def cell(x, kind, channels, stride, name):
            states = [x]
            for i in range(self.config["cell_blocks"]):
                source = choices[f"{kind}_{i}_input"]
                states.append(apply_op(states[source], choices[f"{kind}_{i}_op"], channels,
                                       stride if source == 0 else 1, f"{name}_b{i}"))
            return states[1:]
        return cell

    def _supernet_cell(self, rule, weights):
        """The weight-sharing cell: every op of every block, the path chosen by `rule`.

        In a normal cell a block's input and op are two choices, so an op's weights serve
        every input (as in ENAS). In a reduction cell an op on the cell input is strided and
        one on a block is not: input and op are one joint choice there."""
        def mixed(candidates, choices, name, x):
            return self._mixed(rule, weights, candidates, choices, name, x)

        def cell(x, kind, channels, stride, name):
            del kind  # the stride says it
            states = [x]
            for i in range(self.config["cell_blocks"]):
                block = f"{name}_b{i}"
                if stride == 1:
                    picked = x if i == 0 else mixed(
                        [PickInput(s, name=f"{block}_input{s}") for s in range(i + 1)],
                        list(range(i + 1)), f"{block}_input", states)
                    states.append(mixed([CellOp(op, channels, name=f"{block}_{op}")
                                         for op in OPS], list(OPS), f"{block}_op", picked))
                else:
                    pairs = [(s, op) for s in range(i + 1) for op in OPS]
                    states.append(mixed(
                        [PickInput(s, CellOp(op, channels, stride if s == 0 else 1,
                                             name=f"{block}_{s}_{op}"),
                                   name=f"{block}_{s}_{op}_pick")
                         for s, op in pairs], [list(p) for p in pairs], block, states))
            return states[1:]
        return cell

    def _network(self, cell, inputs):
        c, L = self.config, keras.layers
        channels = c["filters"]
        x = L.Conv2D(channels, 3, padding="same", use_bias=False,
                     name="stem_conv")(self._normalize(inputs))
        x = L.BatchNormalization(name="stem_bn", **BN)(x)
        for kind, name in self._layers():
            if kind == "normal":
                half, passed = ChannelSplit(name=f"{name}_split")(x)
                y = self._sum(cell(half, "normal", channels // 2, 1, name), name)
                y = L.Concatenate(name=f"{name}_concat")([y, passed])
            else:
                y = self._sum(cell(x, "reduce", channels, 2, name), name)
                bypass = factorized_reduce(factorized_reduce_layers(channels, f"{name}_bypass"),
                                           x)
                y = L.Concatenate(name=f"{name}_concat")([y, bypass])
                channels *= 2
            x = ChannelShuffle(2, name=f"{name}_shuffle")(y)
        x = L.ReLU(name="head_relu")(x)
        x = L.GlobalAveragePooling2D(name="pool")(x)
        return L.Dense(c["num_classes"], name="classifier")(x)

    @staticmethod
    def _sum(blocks, name):
        return blocks[0] if len(blocks) == 1 else keras.layers.Add(name=f"{name}_sum")(blocks)

    def supernet_path(self, choices):
        self.validate_choices(choices)
        path = {}
        for kind, name in self._layers():
            for i in range(self.config["cell_blocks"]):
                source, op = choices[f"{kind}_{i}_input"], choices[f"{kind}_{i}_op"]
                if kind == "reduce":
                    path[f"{name}_b{i}"] = [source, op]
                else:
                    if i:
                        path[f"{name}_b{i}_input"] = source
                    path[f"{name}_b{i}_op"] = op
        return path

    def inherit_weights(self, model, supernet, choices):
        self.validate_choices(choices)
        outer = {layer.name for layer in supernet.layers}
        for layer in model.layers:
            if layer.weights and layer.name in outer:  # stem, bypasses, classifier
                layer.set_weights(supernet.get_layer(layer.name).get_weights())
        for kind, name in self._layers():
            for i in range(self.config["cell_blocks"]):
                source, op = choices[f"{kind}_{i}_input"], choices[f"{kind}_{i}_op"]
                if kind == "reduce":
                    mixed_op = supernet.get_layer(f"{name}_b{i}")
                    cell_op = mixed_op.candidates[mixed_op.choices.index([source, op])].layer
                else:
                    mixed_op = supernet.get_layer(f"{name}_b{i}_op")
                    cell_op = mixed_op.candidates[mixed_op.choices.index(op)]
                for suffix, part in cell_op.parts.items():
                    if part.weights:
                        model.get_layer(f"{name}_b{i}_{suffix}").set_weights(part.get_weights())
