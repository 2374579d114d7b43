"""Batch normalization whose training step is one fused TensorFlow kernel."""

import keras
from keras import ops


def fused_training_batch_norm(x, scale, offset, epsilon):
    """`(y, mean, variance)` of a 4-D channels-last float32 training batch: the
    normalized batch through TensorFlow's `FusedBatchNormV3`, and the batch's
    moments (the variance Bessel-corrected, as the kernel gives it). Only `y` is
    differentiable: its gradient is the kernel's own (`FusedBatchNormGradV3`),
    recorded without the zero gradients a tape makes for the kernel's five other
    outputs, which would double the batch norm's share of a traced step."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    moments = []

    @tf.custom_gradient
    def normalize(x, scale, offset):
        y, mean, variance, *reserve = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=scale, offset=offset, mean=tf.zeros((0,)), variance=tf.zeros((0,)),
            epsilon=epsilon, exponential_avg_factor=1.0, data_format="NHWC",
            is_training=True)
        moments.extend((mean, variance))

        def grad(dy):
            dx, dscale, doffset, _, _ = tf.raw_ops.FusedBatchNormGradV3(
                y_backprop=dy, x=x, scale=scale, reserve_space_1=reserve[0],
                reserve_space_2=reserve[1], reserve_space_3=reserve[2], epsilon=epsilon,
                data_format="NHWC", is_training=True)
            return dx, dscale, doffset

        return y, grad

    y = normalize(x, scale, offset)
    return (y,) + tuple(moments)


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
        x = ops.cast(inputs, "float32")
        channels = x.shape[-1]
        scale = (ops.cast(self.gamma, "float32") if self.scale
                 else ops.ones((channels,), "float32"))
        offset = (ops.cast(self.beta, "float32") if self.center
                  else ops.zeros((channels,), "float32"))
        y, mean, variance = fused_training_batch_norm(x, scale, offset, self.epsilon)
        # The kernel's variance is Bessel-corrected; Keras's moving variance is not.
        # With a static shape the correction is a number, folded into the update's.
        momentum, count = self.momentum, None
        if all(d is not None for d in x.shape[:-1]):
            count = float(x.shape[0] * x.shape[1] * x.shape[2])
            variance = variance * ((1.0 - momentum) * (count - 1.0) / max(count, 1.0))
        else:
            count = ops.cast(ops.prod(ops.shape(x)[:-1]), "float32")
            variance = variance * (count - 1.0) / ops.maximum(count, 1.0) * (1.0 - momentum)
        self.moving_mean.assign(ops.cast(self.moving_mean, "float32") * momentum
                                + mean * (1.0 - momentum))
        self.moving_variance.assign(ops.cast(self.moving_variance, "float32") * momentum
                                    + variance)
        return ops.cast(y, self.compute_dtype)
