import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from conftest import TINY_SPACE
from tfnas import deploy
from tfnas.spaces import get_space


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    space = get_space("grunas", TINY_SPACE)
    model = space.build_model({"unit_1": 4, "unit_2": 2, "unit_3": 1, "unit_4": 4})
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    model(x, training=True)  # move the BN statistics away from their initial values
    out = tmp_path_factory.mktemp("export")
    saved = deploy.export_saved_model(model, str(out / "saved_model"))
    tflite = deploy.convert(saved, str(out / "model.tflite"))
    return model, x, saved, tflite


def test_saved_model_serves_without_tfnas(exported):
    model, x, saved, _ = exported
    np.save(os.path.join(saved, "..", "x.npy"), x)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["tfnas"] = None  # importing tfnas now fails
        try:
            import tfnas
            raise SystemExit("tfnas was importable")
        except ImportError:
            pass
        import numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({saved!r})
        serve = loaded.signatures["serving_default"]
        x = np.load({os.path.join(saved, "..", "x.npy")!r})
        outputs = serve(images=tf.constant(x))
        assert sorted(outputs) == ["logits", "probabilities"], sorted(outputs)
        np.testing.assert_allclose(outputs["probabilities"].numpy().sum(-1), 1.0, rtol=1e-5)
        out = outputs["logits"].numpy()
        np.save({os.path.join(saved, "..", "y.npy")!r}, out)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    served = np.load(os.path.join(saved, "..", "y.npy"))
    np.testing.assert_allclose(served, keras.ops.convert_to_numpy(model(x)), rtol=1e-4,
                               atol=1e-4)


def test_float_tflite_matches_keras_and_uses_builtin_ops_only(exported):
    model, x, _, tflite = exported
    run = deploy.Runner(tflite)
    logits = keras.ops.convert_to_numpy(model(x[:1]))[0]
    out = run(x[0])
    # The model has two outputs; either is the logits or their softmax.
    expected = logits if abs(out.sum() - 1.0) > 1e-3 else np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    ops = deploy.op_names(tflite)
    assert "CONV_2D" in ops and not any(n.startswith("Flex") or n == "CUSTOM" for n in ops)
    labels = np.argmax(keras.ops.convert_to_numpy(model(x)), -1)
    assert deploy.evaluate(tflite, x, labels) == 1.0


@pytest.mark.parametrize("mode", ["float16", "dynamic", "int8"])
def test_quantized_modes_convert_and_agree_with_keras(exported, mode, tmp_path):
    model, x, saved, float_path = exported
    path = deploy.convert(saved, str(tmp_path / f"{mode}.tflite"), mode,
                          representative_data=[x])
    assert os.path.getsize(path) < os.path.getsize(float_path)
    labels = np.argmax(keras.ops.convert_to_numpy(model(x)), -1)
    assert deploy.evaluate(path, x, labels) >= 0.75
    details = deploy.interpreter(path).get_input_details()[0]
    assert details["dtype"] == (np.int8 if mode == "int8" else np.float32)


def test_int8_without_representative_data_is_a_clear_error(exported, tmp_path):
    _, _, saved, _ = exported
    with pytest.raises(deploy.ExportError, match="representative_data"):
        deploy.convert(saved, str(tmp_path / "int8.tflite"), "int8")
    with pytest.raises(deploy.ExportError, match="Unknown TFLite mode"):
        deploy.convert(saved, str(tmp_path / "x.tflite"), "int4")


def test_host_benchmark_reports_min_median_p90(exported):
    from tfnas.deploy.benchmark import benchmark_host

    result = benchmark_host(exported[3], num_threads=1, warmup_runs=2, num_runs=20)
    assert result["num_runs"] == 20 and result["num_threads"] == 1
    assert 0 < result["min_ms"] <= result["median_ms"] <= result["p90_ms"]


@keras.saving.register_keras_serializable(package="tfnas_tests")
class Svd(keras.layers.Layer):
    def call(self, x):
        return keras.ops.svd(x, compute_uv=False)


def test_ops_tflite_cannot_express_fail_loudly(tmp_path):
    inputs = keras.Input((4, 4))
    model = keras.Model(inputs, Svd()(inputs))
    saved = deploy.export_saved_model(model, str(tmp_path / "svd"))
    with pytest.raises(deploy.ExportError, match="built-in ops only"):
        deploy.convert(saved, str(tmp_path / "svd.tflite"))


def test_missing_or_unreadable_tflite_file_is_a_clear_error(tmp_path):
    with pytest.raises(deploy.ExportError, match="No TFLite model"):
        deploy.interpreter(str(tmp_path / "none.tflite"))
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(deploy.ExportError, match="Cannot read TFLite model"):
        deploy.interpreter(str(bad))
