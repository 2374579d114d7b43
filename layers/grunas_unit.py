"""The ShuffleNet-style unit searched by GRUNAS."""

import keras

from tfnas.layers.channel_shuffle import ChannelShuffle
from tfnas.layers.grouped_conv import GroupedConv2D

# PyTorch's BatchNorm2d defaults, which the reference was trained with.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="tfnas")
class GrunasUnit(keras.layers.Layer):
    """GRUNAS unit: 1x1 conv, depthwise 3x3, grouped 1x1 conv, shortcut, shuffle.

    With `e = in / 2`: 1x1 conv in→e (no bias), BN, ReLU; depthwise 3x3 on e
    (no bias, no BN); grouped 1x1 conv e→o with `groups` groups (floor split,
    so `groups` need not divide e); BN; then the input is added (`in == out`,
    o = out) or concatenated in front of the branch (`out == 2 * in`,
    o = out / 2); ReLU; channel shuffle with `groups` groups.

    The unit is a composite layer for use inside a supernet; `inline(x)` applies
    the same sublayers one by one in a functional graph, so a derived model is
    made of built-in layers plus `GroupedConv2D` and `ChannelShuffle`.

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
        prefix = self.name
        self.pw = keras.layers.Conv2D(hidden, 1, use_bias=False, name=f"{prefix}_pw")
        self.pw_bn = keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{prefix}_pw_bn")
        self.pw_relu = keras.layers.ReLU(name=f"{prefix}_pw_relu")
        self.dw = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False,
                                               name=f"{prefix}_dw")
        self.gconv = GroupedConv2D(branch_out, 1, groups=g, name=f"{prefix}_gconv")
        self.gconv_bn = keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{prefix}_gconv_bn")
        self.merge = (keras.layers.Add(name=f"{prefix}_add") if cin == cout
                      else keras.layers.Concatenate(name=f"{prefix}_concat"))
        self.relu = keras.layers.ReLU(name=f"{prefix}_relu")
        self.shuffle = ChannelShuffle(g, name=f"{prefix}_shuffle")

    def inline(self, x, training=None):
        """Applies the sublayers to `x`; on a KerasTensor this adds them to a graph."""
        y = self.pw_relu(self.pw_bn(self.pw(x), training=training))
        y = self.gconv_bn(self.gconv(self.dw(y)), training=training)
        return self.shuffle(self.relu(self.merge([x, y])))

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
