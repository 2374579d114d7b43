"""Grouped convolution that splits channels by hand."""

import keras
from keras import ops


def group_sizes(channels, groups):
    """Channels per group: `floor(channels / groups)` each, remainder to the last.

    This is the split of the GRUNAS reference code, so `groups` need not divide
    `channels` (6 channels in 4 groups give `[1, 1, 1, 3]`).
    """
    if groups < 1:
        raise ValueError(f"groups must be a positive integer, got {groups}.")
    if channels < groups:
        raise ValueError(
            f"Cannot split {channels} channels into {groups} groups: every group "
            f"needs at least one channel. Use groups <= {channels}."
        )
    base = channels // groups
    return [base] * (groups - 1) + [channels - base * (groups - 1)]


@keras.saving.register_keras_serializable(package="tfnas")
class GroupedConv2D(keras.layers.Layer):
    """2D convolution with channel groups, computed as one convolution per group.

    Keras `Conv2D(groups=g)` is several times slower than splitting the channels
    by hand on the TensorFlow CPU path, and it requires `g` to divide both
    channel counts. This layer splits the input, convolves each group with its
    own kernel and concatenates; it lowers to SPLIT_V, CONV_2D and CONCATENATION
    in TFLite.

    With `split="floor"` (default, the GRUNAS reference) every group gets
    `floor(c / g)` channels and the last one also the remainder, for inputs and
    outputs alike. With `split="even"` the group count must divide both.

    Args:
        filters: output channels.
        kernel_size: int or pair.
        groups: number of groups.
        strides, padding, use_bias, kernel_initializer, bias_initializer:
            as in `keras.layers.Conv2D`.
        split: `"floor"` or `"even"`.

    Example:

    >>> layer = GroupedConv2D(12, 1, groups=4)
    >>> tuple(layer(keras.ops.ones((2, 8, 8, 6))).shape)
    (2, 8, 8, 12)
    >>> [tuple(w.shape) for w in layer.weights]
    [(1, 1, 1, 3), (1, 1, 1, 3), (1, 1, 1, 3), (1, 1, 3, 3)]
    """

    def __init__(self, filters, kernel_size, groups=1, strides=1, padding="valid",
                 use_bias=False, kernel_initializer="he_normal",
                 bias_initializer="zeros", split="floor", **kwargs):
        super().__init__(**kwargs)
        if split not in ("floor", "even"):
            raise ValueError(f"split must be 'floor' or 'even', got {split!r}.")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size)
        self.groups = int(groups)
        self.strides = _pair(strides)
        self.padding = padding
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.split = split
        self.output_groups = self._sizes(self.filters, "filters")

    def _sizes(self, channels, what):
        if self.split == "even" and channels % self.groups:
            raise ValueError(
                f"{self.name}: {what}={channels} is not divisible by groups={self.groups}; "
                "use split='floor' to give the remainder to the last group."
            )
        return group_sizes(channels, self.groups)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{self.name}: the channel dimension must be known.")
        self.input_groups = self._sizes(channels, "input channels")
        self.kernels = [
            self.add_weight(name=f"kernel_{i}", shape=(*self.kernel_size, cin, cout),
                            initializer=self.kernel_initializer)
            for i, (cin, cout) in enumerate(zip(self.input_groups, self.output_groups))
        ]
        self.bias = (self.add_weight(name="bias", shape=(self.filters,),
                                     initializer=self.bias_initializer)
                     if self.use_bias else None)

    def call(self, inputs):
        if self.groups == 1:
            pieces = [inputs]
        elif len(set(self.input_groups)) == 1:
            pieces = ops.split(inputs, self.groups, axis=-1)  # TFLite SPLIT, which XNNPACK runs
        else:
            cuts = [sum(self.input_groups[:i + 1]) for i in range(self.groups - 1)]
            pieces = ops.split(inputs, cuts, axis=-1)
        outputs = [ops.conv(x, k, strides=self.strides, padding=self.padding)
                   for x, k in zip(pieces, self.kernels)]
        y = outputs[0] if self.groups == 1 else ops.concatenate(outputs, axis=-1)
        return y + self.bias if self.use_bias else y

    def compute_output_shape(self, input_shape):
        shape = keras.layers.Conv2D(
            self.filters, self.kernel_size, strides=self.strides, padding=self.padding
        ).compute_output_shape(input_shape)
        return tuple(shape)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "groups": self.groups,
            "strides": self.strides,
            "padding": self.padding,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "split": self.split,
        }


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value), int(value))
