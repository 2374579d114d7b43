"""The ShuffleNet-style unit searched by GRUNAS."""

import types

import keras

from tfnas.layers.channel_shuffle import ChannelShuffle
from tfnas.layers.fused_batch_norm import FusedBatchNormalization
from tfnas.layers.grouped_conv import GroupedConv2D

# PyTorch's BatchNorm2d defaults, which the reference was trained with.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def keras_layer_set():
    """The layer classes a GRUNAS network is made of, from Keras 3 (see `unit_layers`)."""
    return types.SimpleNamespace(
        Conv2D=keras.layers.Conv2D, BatchNormalization=keras.layers.BatchNormalization,
        ReLU=keras.layers.ReLU, DepthwiseConv2D=keras.layers.DepthwiseConv2D,
        Add=keras.layers.Add, Concatenate=keras.layers.Concatenate,
        Normalization=keras.layers.Normalization, ZeroPadding2D=keras.layers.ZeroPadding2D,
        GlobalAveragePooling2D=keras.layers.GlobalAveragePooling2D, Dense=keras.layers.Dense,
        Identity=keras.layers.Identity, Input=keras.Input, Model=keras.Model,
        GroupedConv2D=GroupedConv2D, ChannelShuffle=ChannelShuffle)


def supernet_layer_set():
    """`keras_layer_set()` with `FusedBatchNormalization`: a supernet's units train with
    the fused kernel (about half the traced step's ops), and keep the variables that the
    derived network's built-in batch norms inherit."""
    return types.SimpleNamespace(**{**vars(keras_layer_set()),
                                    "BatchNormalization": FusedBatchNormalization})


_CONCATENATIONS = (keras.layers.Concatenate,)


def register_concatenation(cls):
    """Lets `apply_unit` recognise another framework's Concatenate (the tf_keras twin)."""
    global _CONCATENATIONS  # pylint: disable=global-statement
    _CONCATENATIONS = (*_CONCATENATIONS, cls)


def unit_layers(L, prefix, cin, cout, groups, fold_batch_norm=False):
    """The sublayers of a GRUNAS unit, made from the layer set `L`.

    `L` names the classes (`keras_layer_set()` for Keras 3; the quantization-aware
    path passes tf_keras's), so one definition serves both frameworks. With
    `fold_batch_norm`, the grouped convolution has a bias and the BatchNorm after
    it is an `Identity`: the inference form that `tfnas.deploy.lowering` makes.
    """
    hidden = cin // 2
    branch_out = cout if cin == cout else cout // 2
    bn = {"momentum": BN_MOMENTUM, "epsilon": BN_EPSILON}
    return {
        "pw": L.Conv2D(hidden, 1, use_bias=False, name=f"{prefix}_pw"),
        "pw_bn": L.BatchNormalization(name=f"{prefix}_pw_bn", **bn),
        "pw_relu": L.ReLU(name=f"{prefix}_pw_relu"),
        "dw": L.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{prefix}_dw"),
        "gconv": L.GroupedConv2D(branch_out, 1, groups=groups, use_bias=fold_batch_norm,
                                 name=f"{prefix}_gconv"),
        "gconv_bn": (L.Identity(name=f"{prefix}_gconv_bn") if fold_batch_norm
                     else L.BatchNormalization(name=f"{prefix}_gconv_bn", **bn)),
        "merge": (L.Add(name=f"{prefix}_add") if cin == cout
                  else L.Concatenate(name=f"{prefix}_concat")),
        "relu": L.ReLU(name=f"{prefix}_relu"),
        "shuffle": L.ChannelShuffle(groups, name=f"{prefix}_shuffle"),
    }


def apply_unit(layers, x, training=None):
    """Runs a unit's sublayers (attributes of `layers`) on `x`.

    Concatenating units apply the final ReLU to the branch before the
    concatenation: relu(concat(x, y)) = concat(x, relu(y)) because a unit's
    input is always a ReLU output (the stem's or the previous unit's), and in
    int8 TFLite the ReLU then fuses into the branch's convolution instead of
    running as a standalone int8 RELU, which LiteRT executes about 30x slower
    than the concatenation itself (benchmarks/deploy_grunas.py).
    """
    y = layers.pw_relu(layers.pw_bn(layers.pw(x), training=training))
    y = layers.gconv_bn(layers.gconv(layers.dw(y)), training=training)
    if isinstance(layers.merge, _CONCATENATIONS):
        return layers.shuffle(layers.merge([x, layers.relu(y)]))
    return layers.shuffle(layers.relu(layers.merge([x, y])))


@keras.saving.register_keras_serializable(package="tfnas")
class GrunasUnit(keras.layers.Layer):
    """GRUNAS unit: 1x1 conv, depthwise 3x3, grouped 1x1 conv, shortcut, shuffle.

    With `e = in / 2`: 1x1 conv in→e (no bias), BN, ReLU; depthwise 3x3 on e
    (no bias, no BN); grouped 1x1 conv e→o with `groups` groups (floor split,
    so `groups` need not divide e); BN; then the input is added (`in == out`,
    o = out) or concatenated in front of the branch (`out == 2 * in`,
    o = out / 2); ReLU; channel shuffle with `groups` groups.

    Inputs are assumed non-negative, as they are everywhere in a GRUNAS
    network (every unit follows a ReLU): a concatenating unit applies its
    final ReLU to the branch only (see `apply_unit`).

    The unit is a composite layer for use inside a supernet, its batch norms
    `FusedBatchNormalization`s (a smaller traced training step); a derived model
    (`GrunasSpace.build_model`) is made of the same sublayers as built-in layers
    plus `GroupedConv2D` and `ChannelShuffle`.

    Example:

    >>> unit = GrunasUnit(12, 24, groups=4)
    >>> tuple(unit(keras.ops.ones((2, 18, 18, 12))).shape)
    (2, 18, 18, 24)
    """

    SUBLAYERS = ("pw", "pw_bn", "pw_relu", "dw", "gconv", "gconv_bn", "merge", "relu",
                 "shuffle")

    def __init__(self, in_channels, out_channels, groups=1, **kwargs):
        super().__init__(**kwargs)
        self.in_channels, self.out_channels, self.groups = (
            int(in_channels), int(out_channels), int(groups))
        cin, cout, g = self.in_channels, self.out_channels, self.groups
        if cin % 2:
            raise ValueError(f"{self.name}: in_channels must be even (the bottleneck is "
                             f"in/2), got {cin}.")
        if cout not in (cin, 2 * cin):
            raise ValueError(f"{self.name}: out_channels must equal in_channels (residual "
                             f"add) or twice it (concatenation), got in={cin}, out={cout}.")
        if g < 1 or cout % g:
            raise ValueError(
                f"{self.name}: groups={g} cannot be used by the channel shuffle of a unit "
                f"with {cout} output channels; choose a group count that divides {cout}.")
        hidden = cin // 2
        branch_out = cout if cin == cout else cout // 2
        if hidden < g:
            raise ValueError(f"{self.name}: groups={g} exceeds the {hidden} bottleneck "
                             "channels of the grouped convolution.")
        for attr, layer in unit_layers(supernet_layer_set(), self.name, cin, cout,
                                       g).items():
            setattr(self, attr, layer)

    def inline(self, x, training=None):
        """Applies the sublayers to `x`; on a KerasTensor this adds them to a graph."""
        return apply_unit(self, x, training=training)

    def build(self, input_shape):
        if input_shape[-1] != self.in_channels:
            raise ValueError(f"{self.name}: expected {self.in_channels} input channels, "
                             f"got input shape {input_shape}.")
        self.inline(keras.KerasTensor(input_shape))

    def call(self, inputs, training=None):
        return self.inline(inputs, training=training)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.out_channels)

    def get_config(self):
        return {**super().get_config(), "in_channels": self.in_channels,
                "out_channels": self.out_channels, "groups": self.groups}
