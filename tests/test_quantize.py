"""Native quantization-aware training (Keras 3 fake quantization) for every space."""

import os

import keras
import numpy as np
import pytest

from conftest import TINY_SPACE
from tfnas import data, deploy
from tfnas.deploy import quantize
from tfnas.deploy.lowering import fold_batch_norms
from tfnas.spaces import get_space

# Six bottlenecks, three of them searched (scope s): every layer kind of the space, quickly.
RESNET = {"stem": "cifar", "width_multiplier": 0.0625, "input_shape": [16, 16, 3],
          "scope": "s", "depths": [1, 1, 1, 3], "activations": ["relu", "leaky_relu", "mish"]}


def _images(n, shape=(32, 32, 3), seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype("float32")


def _with_statistics(model, x):
    """Moves every BatchNormalization's statistics off their initial values."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            rng = np.random.default_rng(len(layer.name))
            layer.set_weights([gamma * rng.uniform(0.5, 1.5, gamma.shape),
                               beta + rng.normal(0, 0.1, beta.shape),
                               mean + rng.normal(0, 0.1, mean.shape),
                               var * rng.uniform(0.5, 1.5, var.shape)])
    return model


def _resnet_model():
    space = get_space("resnet50", RESNET)
    labels = ["k3_relu", "k5_leaky_relu", "k3_mish"]
    choices = {b: labels[i % 3] for i, b in enumerate(space.blocks())}
    return space.build_model(choices)


@pytest.mark.parametrize("which", ["grunas", "resnet50"])
def test_folding_every_batch_norm_keeps_the_function(which):
    if which == "grunas":
        space = get_space("grunas", TINY_SPACE)
        model = space.build_model({"unit_1": 4, "unit_2": 2, "unit_3": 1, "unit_4": 4})
        x = _images(4)
    else:
        model, x = _resnet_model(), _images(4, (16, 16, 3))
    model = _with_statistics(model, x)
    folded = quantize.fold_all_batch_norms(model)
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in folded.layers)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(folded(x)),
                               keras.ops.convert_to_numpy(model(x)), rtol=1e-3, atol=1e-3)


def test_quantize_aware_resnet_with_leaky_relu_and_mish_tracks_the_float_model():
    model = _with_statistics(_resnet_model(), None)
    x = _images(16, (16, 16, 3))
    q = quantize.quantize_model(model)
    kinds = {type(l).__name__ for l in q.layers} | {
        type(l.layer).__name__ for l in q.layers if isinstance(l, quantize.QuantizeOutput)}
    assert {"QuantConv2D", "QuantDense", "QuantizeOutput", "FoldedBatchNorm"} <= kinds
    # A convolution whose ReLU TFLite fuses keeps a float output; one before LeakyReLU or Mish
    # is an int8 tensor in the file, so it is quantized.
    relu_fused = q.get_layer("layer1_0_1_conv")  # conv -> BN (folded) -> ReLU
    assert not isinstance(relu_fused, quantize.QuantizeOutput)
    acts = [l for l in model.layers if l.name.endswith("_2_act")
            and not isinstance(l, keras.layers.ReLU)]
    assert acts
    for act in acts:
        conv = q.get_layer(act.name.replace("_2_act", "_2_conv"))
        assert isinstance(conv, quantize.QuantizeOutput), conv.name
    quantize.calibrate(q, [x[:8], x[8:]])
    reference = keras.ops.convert_to_numpy(model(x))
    error = np.mean(np.abs(keras.ops.convert_to_numpy(q(x)) - reference)) / np.std(reference)
    assert error < 0.15


def _trained_tiny():
    space = get_space("grunas", TINY_SPACE)
    model = space.build_model({"unit_1": 4, "unit_2": 2, "unit_3": 1, "unit_4": 4})
    train = data.pipeline(data.load().full_train.take(512), 64, training=True, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train, epochs=2, verbose=0)
    return model, train


def test_native_qat_int8_file_reproduces_the_fake_quantized_model(tmp_path):
    model, train = _trained_tiny()
    arrays = data.load_bundled_arrays()
    x, calibration = (arrays["x_test"][:200].astype("float32"),
                      arrays["x_train"][:64].astype("float32"))
    path, history, q = quantize.train_and_convert(
        model, train, str(tmp_path / "qat.tflite"), epochs=1,
        representative_data=[calibration], calibration_steps=64)
    assert len(history["loss"]) == 1
    fake_quant = keras.ops.convert_to_numpy(q(x))
    runner = deploy.Runner(path)
    tflite = np.array([runner(im) for im in x]).reshape(fake_quant.shape)
    interpreter = deploy.interpreter(path)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    # Every rounding of the int8 file is simulated (the normalization's centered tensor and
    # int8 constants, a grouped convolution's concatenation before its bias): the logits agree
    # to the last bit but for rounding ties (was 0.63 LSB on average, 3 at most, before).
    lsb = np.abs(fake_quant - tflite) / interpreter.get_output_details()[0]["quantization"][0]
    assert np.mean(lsb) <= 0.3 and np.max(lsb) <= 2.01, (np.mean(lsb), np.max(lsb))
    assert np.mean(fake_quant.argmax(-1) == tflite.argmax(-1)) >= 0.97
    assert not any(op.startswith("Flex") for op in deploy.op_names(path))
    # No larger than the post-training int8 file of the same model (per-tensor weights).
    saved = deploy.export_saved_model(fold_batch_norms(model), str(tmp_path / "sm"))
    ptq = deploy.convert(saved, str(tmp_path / "ptq.tflite"), "int8",
                         representative_data=[calibration], calibration_steps=64,
                         per_channel=False)
    # Same tensors, no requantizing op: the bytes differ only by the converter's conversion
    # metadata, which records the quantization-aware mode (8 bytes when written).
    assert "QUANTIZE" not in deploy.op_names(path)
    assert len(deploy.interpreter(path).get_tensor_details()) == \
        len(deploy.interpreter(ptq).get_tensor_details())
    assert os.path.getsize(path) <= os.path.getsize(ptq) + 64
    with pytest.raises(deploy.ExportError, match="representative_data"):
        quantize.train_and_convert(model, train, str(tmp_path / "x.tflite"))
    with pytest.raises(deploy.ExportError, match="train_data is empty"):
        quantize.train_and_convert(model, train.take(0), str(tmp_path / "x.tflite"),
                                   representative_data=[calibration])
    with pytest.raises(deploy.ExportError, match="finite train_data"):
        quantize.train_and_convert(model, train.repeat(), str(tmp_path / "x.tflite"),
                                   representative_data=[calibration])
    assert not (tmp_path / "x.tflite").exists()


def test_native_qat_exports_the_resnet50_space_to_int8(tmp_path):
    model = _resnet_model()
    images = _images(64, (16, 16, 3))
    labels = np.arange(64) % 10
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    train = tf.data.Dataset.from_tensor_slices((images, labels)).batch(32)
    # Fine-tuning is tested on GRUNAS above; here the rewrite and the conversion.
    path, _, q = quantize.train_and_convert(model, train, str(tmp_path / "resnet.tflite"),
                                            epochs=0, representative_data=[images[:32]],
                                            calibration_steps=32)
    ops = set(deploy.op_names(path))
    assert "CONV_2D" in ops and not any(op.startswith("Flex") for op in ops)
    assert deploy.interpreter(path).get_input_details()[0]["dtype"] == np.int8
    fake_quant = np.argmax(keras.ops.convert_to_numpy(q(images[:32])), -1)
    tflite = np.argmax([deploy.Runner(path)(im) for im in images[:32]], -1)
    assert np.mean(fake_quant == tflite) >= 0.75


def test_a_dead_channel_folds_to_its_bias():
    """A channel whose BatchNorm saw a constant (running variance ~0) folds to beta alone: its
    kernel times gamma/sqrt(eps) would dwarf every live channel in a per-tensor scale (a
    GRUNAS network trained on seed 1 ended with a folded kernel of 875 and a file XNNPACK
    refused)."""
    inputs = keras.Input((4, 4, 3))
    conv = keras.layers.Conv2D(4, 1, use_bias=False)
    bn = keras.layers.BatchNormalization()
    model = keras.Model(inputs, keras.layers.ReLU()(bn(conv(inputs))))
    kernel = np.random.default_rng(0).normal(0, 0.3, (1, 1, 3, 4)).astype("float32")
    kernel[0, 0, :, 0] = [5.0, 0.0, 0.0]  # channel 0 reads only input channel 0, always 0
    conv.set_weights([kernel])
    bn.set_weights([np.full(4, 2.0, "float32"), np.array([0.3, 0.1, -0.1, 0.2], "float32"),
                    np.zeros(4, "float32"), np.array([0.0, 1.0, 0.5, 2.0], "float32")])
    x = _images(8, (4, 4, 3)) / 255.0
    x[..., 0] = 0.0
    folded = quantize.fold_all_batch_norms(model)
    folded_kernel = folded.get_layer(conv.name).get_weights()[0]
    assert np.all(folded_kernel[..., 0] == 0) and np.max(np.abs(folded_kernel)) < 5
    np.testing.assert_allclose(keras.ops.convert_to_numpy(folded(x)),
                               keras.ops.convert_to_numpy(model(x)), rtol=1e-5, atol=1e-5)
