"""Batch normalization whose training step is one fused TensorFlow kernel."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfnas")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` that normalizes a training batch with
    TensorFlow's fused kernel (`FusedBatchNormV3` and its gradient).

    Keras 3 composes a training batch norm from about twenty ops (moments, the
    normalization, their gradients). In a supernet of hundreds of batch norms that
    is half of the traced graph: its size is what tracing costs in memory and time,
    and the unfused gradient keeps several activation-sized intermediates. The
    fused kernel computes the same function (the moving statistics get the biased
    batch variance, as Keras's), with the same variables, so weights move to and
    from a plain `BatchNormalization` by name.

    It falls back to Keras's own computation where the kernel does not apply:
    inference, a synchronized batch norm (the moments are all-reduced across
    replicas), masks, renormalization, inputs other than 4-D channels-last, float64
    (the kernel computes in float32), and backends other than TensorFlow.

    Example:

    >>> bn = FusedBatchNormalization(momentum=0.9, epsilon=1e-5)
    >>> y = bn(keras.ops.ones((2, 4, 4, 3)), training=True)
    """

    def _fused(self, inputs, training, mask):
        return (training and self.trainable and not self.synchronized and mask is None
                and not self.renorm and len(inputs.shape) == 4
                and self.axis in (-1, 3) and keras.backend.backend() == "tensorflow"
                and keras.backend.result_type(inputs.dtype, "float32") == "float32")

    def call(self, inputs, training=None, mask=None):
        if not self._fused(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        x = ops.cast(inputs, "float32")
        channels = x.shape[-1]
        scale = (ops.cast(self.gamma, "float32") if self.scale
                 else ops.ones((channels,), "float32"))
        offset = (ops.cast(self.beta, "float32") if self.center
                  else ops.zeros((channels,), "float32"))
        y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=scale, offset=offset, mean=tf.zeros((0,)), variance=tf.zeros((0,)),
            epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
            is_training=True)
        # The kernel's variance is Bessel-corrected; Keras's moving variance is not.
        count = ops.cast(ops.prod(ops.shape(x)[:-1]), "float32")
        variance = variance * (count - 1.0) / ops.maximum(count, 1.0)
        momentum = self.momentum
        self.moving_mean.assign(ops.cast(self.moving_mean, "float32") * momentum
                                + mean * (1.0 - momentum))
        self.moving_variance.assign(ops.cast(self.moving_variance, "float32") * momentum
                                    + variance * (1.0 - momentum))
        return ops.cast(y, self.compute_dtype)
