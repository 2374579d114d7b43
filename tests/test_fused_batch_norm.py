"""FusedBatchNormalization computes what Keras's BatchNormalization does, in fewer ops."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnas.layers import CellOp, FusedBatchNormalization


def _step(layer, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * tf.sin(y))
    return [y, *tape.gradient(loss, [x] + layer.trainable_weights),
            layer.moving_mean, layer.moving_variance]


@pytest.mark.parametrize("affine", [True, False])
def test_a_training_step_equals_keras_batch_normalization(affine):
    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, (8, 5, 5, 6)), tf.float32)
    layers = [cls(momentum=0.9, epsilon=1e-5, center=affine, scale=affine)
              for cls in (keras.layers.BatchNormalization, FusedBatchNormalization)]
    for layer in layers:
        layer.build(x.shape)
        if affine:
            layer.gamma.assign(np.linspace(0.5, 2.0, 6))
            layer.beta.assign(np.linspace(-1.0, 1.0, 6))
    keras_step, fused_step = (_step(layer, x) for layer in layers)
    assert len(fused_step) == len(keras_step) == (6 if affine else 4)
    for a, b in zip(keras_step, fused_step):
        # The moving variance takes the biased batch variance, as Keras's does.
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(layers[1](x), layers[0](x), atol=1e-5)  # inference


def test_a_batch_of_unknown_size_updates_the_statistics_as_keras():
    x = tf.constant(np.random.default_rng(2).normal(1.0, 2.0, (6, 3, 3, 4)), tf.float32)
    layers = [cls(momentum=0.8) for cls in (keras.layers.BatchNormalization,
                                            FusedBatchNormalization)]
    outputs = [tf.function(lambda x, layer=layer: layer(x, training=True),
                           input_signature=[tf.TensorSpec((None, 3, 3, 4))])(x)
               for layer in layers]
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layers[1].moving_mean, layers[0].moving_mean, rtol=1e-6)
    np.testing.assert_allclose(layers[1].moving_variance, layers[0].moving_variance, rtol=1e-5)


def test_fallbacks_are_keras_own_computation():
    x = tf.constant(np.random.default_rng(1).normal(size=(4, 3, 6)), tf.float32)  # 3-D
    bn = FusedBatchNormalization()
    assert not bn._fused(x, True, None)
    assert not bn._fused(tf.zeros((2, 4, 4, 3), tf.float64), True, None)
    assert bn._fused(tf.zeros((2, 4, 4, 3), tf.float16), True, None)
    bn.synchronized = True
    assert not bn._fused(tf.zeros((2, 4, 4, 3)), True, None)
    plain = keras.layers.BatchNormalization()
    np.testing.assert_allclose(FusedBatchNormalization()(x, training=True),
                               plain(x, training=True), atol=1e-6)


def test_a_supernet_op_traces_fewer_ops_and_round_trips(tmp_path):
    x = tf.zeros((2, 8, 8, 8))

    def ops_in_step(op):
        op.build(x.shape)
        step = tf.function(lambda x: tf.gradients(tf.reduce_sum(op(x, training=True)),
                                                  op.trainable_weights))
        return len(step.get_concrete_function(x).graph.get_operations())

    fused = CellOp("sep_conv_3x3", channels=8, name="op")
    plain = CellOp("sep_conv_3x3", channels=8, fused_batch_norm=False, name="op")
    assert isinstance(fused.parts["bn0"], FusedBatchNormalization)
    assert type(plain.parts["bn0"]) is keras.layers.BatchNormalization
    # Measured: 110 against 231.
    assert ops_in_step(fused) < 0.55 * ops_in_step(plain)
    model = keras.Sequential([keras.Input((8, 8, 8)), fused])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.layers[0].parts["bn1"], FusedBatchNormalization)
    np.testing.assert_allclose(loaded(x + 1.0), model(x + 1.0), atol=1e-6)
