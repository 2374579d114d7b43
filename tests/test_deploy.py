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
    tflite = deploy.convert_to_tflite(saved, str(out / "model.tflite"))
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
        out = list(serve(tf.constant(x)).values())[0].numpy()
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
    interpreter = deploy.tflite_interpreter(tflite)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.set_tensor(inp["index"], x[:1])
    interpreter.invoke()
    np.testing.assert_allclose(interpreter.get_tensor(out["index"]),
                               keras.ops.convert_to_numpy(model(x[:1])), rtol=1e-4, atol=1e-4)
    ops = {d["op_name"] for d in interpreter._get_ops_details()}  # pylint: disable=protected-access
    assert not any(name.startswith("Flex") or name == "CUSTOM" for name in ops)
    labels = np.argmax(keras.ops.convert_to_numpy(model(x)), -1)
    assert deploy.evaluate_tflite(tflite, x, labels) == 1.0


@keras.saving.register_keras_serializable(package="tfnas_tests")
class Svd(keras.layers.Layer):
    def call(self, x):
        return keras.ops.svd(x, compute_uv=False)


def test_ops_tflite_cannot_express_fail_loudly(tmp_path):
    inputs = keras.Input((4, 4))
    model = keras.Model(inputs, Svd()(inputs))
    saved = deploy.export_saved_model(model, str(tmp_path / "svd"))
    with pytest.raises(deploy.ExportError, match="built-in ops only"):
        deploy.convert_to_tflite(saved, str(tmp_path / "svd.tflite"))


def test_missing_tflite_file_is_a_clear_error(tmp_path):
    with pytest.raises(deploy.ExportError, match="No TFLite model"):
        deploy.tflite_interpreter(str(tmp_path / "none.tflite"))
