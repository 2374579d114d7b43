"""ShuffleNASNets: ENAS cells in a ShuffleNet V2 network.

Bruegge, Liu, Swadzba, Wagner, "ShuffleNASNets: Efficient CNN models through
modified Efficient Neural Architecture Search" (REFERENCE §3). A cell has B
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
README next to the paper's.
"""

import keras

from tfnas.layers.channel_shuffle import ChannelShuffle, ChannelSplit
from tfnas.layers.min_pooling import MinPooling2D
from tfnas.spaces.base import SearchSpace, SearchSpaceError, register_space

OPS = ("sep_conv_3x3", "sep_conv_5x5", "max_pool_3x3", "min_pool_3x3", "identity", "conv_1x1")
CIFAR_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR_STD = [0.2470, 0.2435, 0.2616]
BN = {"momentum": 0.9, "epsilon": 1e-5}

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
class ShuffleNasNetSpace(SearchSpace):
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

    def __init__(self, **config):
        super().__init__(**config)
        c = self.config
        for key in ("filters", "cells_per_stage", "cell_blocks"):
            if not isinstance(c[key], int) or c[key] < 1:
                raise SearchSpaceError(f"shufflenasnet: {key} must be a positive integer, "
                                       f"got {c[key]!r}.")
        if c["filters"] % 2:
            raise SearchSpaceError(f"shufflenasnet: filters={c['filters']} must be even: a "
                                   "normal layer splits its channels in halves.")

    def blocks(self):
        return [f"{kind}_{i}_{what}" for kind in ("normal", "reduce")
                for i in range(self.config["cell_blocks"]) for what in ("input", "op")]

    def candidates(self, block):
        _, index, what = block.split("_")
        return list(range(int(index) + 1)) if what == "input" else list(OPS)

    # -- layers -----------------------------------------------------------------------------
    def _op(self, x, op, channels, stride, name):
        L = keras.layers
        if op == "identity":
            return x if stride == 1 else self._factorized_reduce(x, channels, name)
        if op in ("max_pool_3x3", "min_pool_3x3"):
            pool = L.MaxPooling2D if op == "max_pool_3x3" else MinPooling2D
            return pool(3, strides=stride, padding="same", name=name)(x)
        if op == "conv_1x1":
            x = L.ReLU(name=f"{name}_relu")(x)
            x = L.Conv2D(channels, 1, strides=stride, use_bias=False, name=f"{name}_conv")(x)
            return L.BatchNormalization(name=f"{name}_bn", **BN)(x)
        kernel = 3 if op == "sep_conv_3x3" else 5
        for k in range(2):  # ENAS applies a separable convolution twice
            x = L.ReLU(name=f"{name}_relu{k}")(x)
            x = L.DepthwiseConv2D(kernel, strides=stride if k == 0 else 1, padding="same",
                                  use_bias=False, name=f"{name}_dw{k}")(x)
            x = L.Conv2D(channels, 1, use_bias=False, name=f"{name}_pw{k}")(x)
            x = L.BatchNormalization(name=f"{name}_bn{k}", **BN)(x)
        return x

    @staticmethod
    def _factorized_reduce(x, channels, name):
        """Two 1x1 stride-2 convolutions, the second on the input shifted by one pixel."""
        L = keras.layers
        x = L.ReLU(name=f"{name}_relu")(x)
        a = L.Conv2D(channels // 2, 1, strides=2, use_bias=False, name=f"{name}_conv_a")(x)
        shifted = L.Cropping2D(((1, 0), (1, 0)), name=f"{name}_crop")(
            L.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_pad")(x))
        b = L.Conv2D(channels - channels // 2, 1, strides=2, use_bias=False,
                     name=f"{name}_conv_b")(shifted)
        return L.BatchNormalization(name=f"{name}_bn", **BN)(
            L.Concatenate(name=f"{name}_concat")([a, b]))

    def _cell(self, x, choices, kind, channels, stride, name):
        states = [x]
        for i in range(self.config["cell_blocks"]):
            source = choices[f"{kind}_{i}_input"]
            states.append(self._op(states[source], choices[f"{kind}_{i}_op"], channels,
                                   stride if source == 0 else 1, f"{name}_b{i}"))
        blocks = states[1:]
        return blocks[0] if len(blocks) == 1 else keras.layers.Add(name=f"{name}_sum")(blocks)

    def _normal_layer(self, x, choices, channels, name):
        half, passed = ChannelSplit(name=f"{name}_split")(x)
        y = self._cell(half, choices, "normal", channels // 2, 1, name)
        y = keras.layers.Concatenate(name=f"{name}_concat")([y, passed])
        return ChannelShuffle(2, name=f"{name}_shuffle")(y)

    def _reduction_layer(self, x, choices, channels, name):
        y = self._cell(x, choices, "reduce", channels, 2, name)
        bypass = self._factorized_reduce(x, channels, f"{name}_bypass")
        y = keras.layers.Concatenate(name=f"{name}_concat")([y, bypass])
        return ChannelShuffle(2, name=f"{name}_shuffle")(y)

    def build_model(self, choices, name=None, layer_set=None, fold_batch_norms=False):
        if layer_set is not None:
            raise SearchSpaceError("shufflenasnet builds Keras 3 models only (its QAT is the "
                                   "native one, export.qat_backend: \"native\").")
        del fold_batch_norms  # folding is deploy's (tfnas.deploy.quantize / lowering)
        self.validate_choices(choices)
        c, L = self.config, keras.layers
        inputs = keras.Input(tuple(c["input_shape"]), name="images")
        x = L.Normalization(mean=[255.0 * m for m in c["mean"]],
                            variance=[(255.0 * s) ** 2 for s in c["std"]],
                            name="normalize")(inputs)
        channels = c["filters"]
        x = L.Conv2D(channels, 3, padding="same", use_bias=False, name="stem_conv")(x)
        x = L.BatchNormalization(name="stem_bn", **BN)(x)
        for stage in range(3):
            if stage:
                channels *= 2
                x = self._reduction_layer(x, choices, channels // 2, f"reduce{stage}")
            for k in range(c["cells_per_stage"]):
                x = self._normal_layer(x, choices, channels, f"stage{stage + 1}_cell{k + 1}")
        x = L.ReLU(name="head_relu")(x)
        x = L.GlobalAveragePooling2D(name="pool")(x)
        outputs = L.Dense(c["num_classes"], name="classifier")(x)
        return keras.Model(inputs, outputs, name=name or "shufflenasnet")

    def build_supernet(self, mixing="chosen"):
        raise SearchSpaceError(
            "shufflenasnet has no weight-sharing supernet yet (one cell architecture for "
            "every layer needs op choices shared across cells): search it with "
            "search.method \"tuner\" (any keras-tuner tuner, or the ENAS controller as "
            "{\"type\": \"enas\"}), each trial training its own network.")

    def inherit_weights(self, model, supernet, choices):
        raise SearchSpaceError("shufflenasnet has no supernet to inherit weights from.")

    def latency_ops(self):
        raise SearchSpaceError("shufflenasnet has no latency table yet; time whole networks "
                               "with tfnas benchmark.")
