"""Min pooling, as ShuffleNASNets define it: `-maxpool(-x)`."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfnas")
class MinPooling2D(keras.layers.Layer):
    """The minimum over each window: `-max_pool(-x)` (TFLite: NEG, MAX_POOL_2D, NEG).

    Example:

    >>> x = keras.ops.reshape(keras.ops.arange(16.0), (1, 4, 4, 1))
    >>> keras.ops.convert_to_numpy(MinPooling2D(2, 2)(x))[0, :, :, 0].tolist()
    [[0.0, 2.0], [8.0, 10.0]]
    """

    def __init__(self, pool_size=3, strides=1, padding="same", **kwargs):
        super().__init__(**kwargs)
        self.pool_size, self.strides, self.padding = pool_size, strides, padding

    def call(self, inputs):
        return -ops.max_pool(-inputs, self.pool_size, self.strides, self.padding)

    def compute_output_shape(self, input_shape):
        return keras.layers.MaxPooling2D(self.pool_size, self.strides, self.padding) \
            .compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides,
                "padding": self.padding}
