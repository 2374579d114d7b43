"""Channel shuffle of ShuffleNet."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfnas")
class ChannelShuffle(keras.layers.Layer):
    """Interleaves the channels of `groups` groups (ShuffleNet's channel shuffle).

    Channels `[a0 a1 b0 b1]` with 2 groups become `[a0 b0 a1 b1]`. It lowers to
    RESHAPE, TRANSPOSE, RESHAPE in TFLite. `groups` must divide the channel count.

    Example:

    >>> x = keras.ops.reshape(keras.ops.arange(4, dtype="float32"), (1, 1, 1, 4))
    >>> keras.ops.convert_to_numpy(ChannelShuffle(2)(x)).ravel().tolist()
    [0.0, 2.0, 1.0, 3.0]
    """

    def __init__(self, groups, **kwargs):
        super().__init__(**kwargs)
        if int(groups) < 1:
            raise ValueError(f"groups must be a positive integer, got {groups}.")
        self.groups = int(groups)

    def build(self, input_shape):
        *spatial, channels = input_shape[1:]
        if channels is None or any(d is None for d in spatial):
            raise ValueError(f"{self.name}: spatial and channel dimensions must be known, "
                             f"got {input_shape}.")
        if channels % self.groups:
            raise ValueError(
                f"{self.name}: channel shuffle with {self.groups} groups needs a channel "
                f"count divisible by {self.groups}, got {channels}. Choose a group count "
                "that divides the block's output channels."
            )
        self._spatial = tuple(spatial)
        self._channels = channels

    def call(self, inputs):
        if self.groups == 1:
            return inputs
        per_group = self._channels // self.groups
        rank = len(self._spatial)
        x = ops.reshape(inputs, (-1, *self._spatial, self.groups, per_group))
        x = ops.transpose(x, (0, *range(1, rank + 1), rank + 2, rank + 1))
        return ops.reshape(x, (-1, *self._spatial, self._channels))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(package="tfnas")
class ChannelSplit(keras.layers.Layer):
    """Splits the channels into `parts` equal parts (TFLite SPLIT): ShuffleNet V2's units
    process one half and pass the other.

    Example:

    >>> a, b = ChannelSplit()(keras.ops.ones((1, 2, 2, 6)))
    >>> tuple(a.shape), tuple(b.shape)
    ((1, 2, 2, 3), (1, 2, 2, 3))
    """

    def __init__(self, parts=2, **kwargs):
        super().__init__(**kwargs)
        self.parts = int(parts)

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] % self.parts:
            raise ValueError(f"{self.name}: {input_shape[-1]} channels do not split into "
                             f"{self.parts} equal parts.")

    def call(self, inputs):
        return ops.split(inputs, self.parts, axis=-1)

    def compute_output_shape(self, input_shape):
        part = None if input_shape[-1] is None else input_shape[-1] // self.parts
        return [(*input_shape[:-1], part) for _ in range(self.parts)]

    def get_config(self):
        return {**super().get_config(), "parts": self.parts}
