"""The export path's rewrites compute the same function and give the small, fast int8 file."""

import os

import keras
import numpy as np

from tfnas import data, deploy
from tfnas.deploy.lowering import fold_batch_norms
from tfnas.layers import GrunasUnit
from tfnas.spaces import get_space

PAPER = [4, 1, 1, 2, 2, 3, 2, 4, 4, 6]


def test_concatenating_unit_equals_relu_after_concatenation_on_relu_inputs():
    unit = GrunasUnit(24, 48, groups=4)
    x = np.maximum(np.random.default_rng(0).normal(size=(2, 6, 6, 24)), 0).astype("float32")
    y = keras.ops.convert_to_numpy(unit(x, training=True))
    branch = unit.gconv_bn(unit.gconv(unit.dw(unit.pw_relu(unit.pw_bn(unit.pw(x),
                                                                        training=True)))),
                           training=True)
    reference = unit.shuffle(np.maximum(np.concatenate([x, np.asarray(branch)], -1), 0))
    np.testing.assert_allclose(y, keras.ops.convert_to_numpy(reference), rtol=1e-5, atol=1e-5)


def test_folding_batch_norms_keeps_the_function_and_the_weights_count():
    space = get_space("grunas")
    model = space.build_model(dict(zip(space.blocks(), PAPER)))
    x = data.load_bundled_arrays()["x_train"][:32].astype("float32")
    model(x, training=True)
    folded = fold_batch_norms(model)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(folded(x)),
                               keras.ops.convert_to_numpy(model(x)), rtol=1e-4, atol=1e-4)
    assert [type(layer).__name__ for layer in folded.layers].count("Identity") == 10


def test_paper_network_int8_file_is_under_0_2_mb_with_no_standalone_relu(tmp_path):
    space = get_space("grunas")
    model = space.build_model(dict(zip(space.blocks(), PAPER)))
    x = data.load_bundled_arrays()["x_train"][:64].astype("float32")
    model(x, training=True)
    saved = deploy.export_saved_model(fold_batch_norms(model), str(tmp_path / "sm"))
    path = deploy.convert(saved, str(tmp_path / "int8.tflite"), "int8",
                          representative_data=[x], per_channel=False)
    assert os.path.getsize(path) <= 200_000
    ops = deploy.op_names(path)
    # ReLUs fuse into convolutions and additions; a standalone int8 RELU is ~30x slower.
    assert "RELU" not in ops and "SPLIT_V" in ops and "SPLIT" in ops
