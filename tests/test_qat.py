"""Quantization-aware training: the tf_keras rebuild, fine-tuning, int8 conversion, isolation."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import TINY_SPACE
from tfnas import data, deploy
from tfnas.architecture import Architecture
from tfnas.spaces import get_space

PAPER = [4, 1, 1, 2, 2, 3, 2, 4, 4, 6]


def test_tfnas_never_imports_tfmot_or_tf_keras_outside_the_qat_path():
    code = ("import os, sys, tfnas, tfnas.pipeline, tfnas.cli, tfnas.deploy\n"
            "from tfnas.deploy import android, benchmark, report\n"
            "bad = [m for m in ('tensorflow_model_optimization', 'tf_keras') if m in sys.modules]\n"
            "assert not bad, bad\n"
            "assert os.environ.get('TF_USE_LEGACY_KERAS') is None\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, check=False, env=env)
    assert result.returncode == 0, result.stderr[-2000:]


def test_tf_keras_rebuild_computes_the_same_function():
    from tfnas.deploy import qat

    space = get_space("grunas")
    arch = Architecture("grunas", space.config, dict(zip(space.blocks(), PAPER)))
    model = space.build_model(arch.choices)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    model(x, training=True)  # non-trivial BN statistics
    twin = qat.rebuild_in_tf_keras(arch, model)
    from tfnas.deploy.lowering import fold_batch_norms

    assert twin.count_params() == fold_batch_norms(model).count_params()
    np.testing.assert_allclose(twin.predict(x, verbose=0), keras.ops.convert_to_numpy(model(x)),
                               rtol=1e-4, atol=1e-4)


def _trained_tiny_model():
    space = get_space("grunas", TINY_SPACE)
    arch = Architecture("grunas", space.config,
                        {"unit_1": 4, "unit_2": 2, "unit_3": 1, "unit_4": 4})
    model = space.build_model(arch.choices)
    train = data.pipeline(data.load().full_train.take(512), 64, training=True, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train, epochs=1, verbose=0)
    return arch, model, train


def test_quantization_aware_int8_tracks_the_float_model(tmp_path):
    from tfnas.deploy import qat

    arch, model, train = _trained_tiny_model()
    arrays = data.load_bundled_arrays()
    x = arrays["x_test"][:200].astype("float32")
    path, history, qat_model = qat.train_and_convert(
        arch, model, train, str(tmp_path / "qat.tflite"), epochs=1,
        representative_data=[arrays["x_train"][:64].astype("float32")], calibration_steps=64)
    assert len(history["loss"]) == 1
    fake_quant = np.argmax(qat_model.predict(x, verbose=0), -1)
    # The int8 file mostly reproduces the fake-quantized model it was converted from (this
    # tiny, barely trained model has near-uniform logits, so close calls flip; the paper
    # network's figures are in benchmarks/deploy_grunas.py).
    assert np.mean(fake_quant == np.argmax([deploy.Runner(path)(im) for im in x], -1)) >= 0.6
    interpreter = deploy.interpreter(path)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    assert not any(op.startswith("Flex") for op in deploy.op_names(path))
    float_labels = np.argmax(keras.ops.convert_to_numpy(model(x)), -1)
    # One epoch of fake-quantized fine-tuning keeps most decisions of the float model.
    assert deploy.evaluate(path, x, float_labels) >= 0.6
    with pytest.raises(deploy.ExportError, match="representative_data"):
        qat.train_and_convert(arch, model, train, str(tmp_path / "x.tflite"), epochs=0)
    calibration = [arrays["x_train"][:8].astype("float32")]
    with pytest.raises(deploy.ExportError, match="finite train_data"):
        qat.train_and_convert(arch, model, train.repeat(), str(tmp_path / "x.tflite"),
                              representative_data=calibration)
    with pytest.raises(deploy.ExportError, match="train_data is empty"):
        qat.train_and_convert(arch, model, train.take(0), str(tmp_path / "x.tflite"),
                              representative_data=calibration)
    assert not (tmp_path / "x.tflite").exists()
    # A dataset of unknown length (after filter) is counted in one pass: 512 images / 64.
    assert qat._steps_per_epoch(train.filter(lambda x, y: True)) == 8  # pylint: disable=W0212
