"""The original ENAS micro space: cells of two-input nodes, weight sharing, TFLite and int8."""

import json
import os

import keras
import keras_tuner as kt
import numpy as np
import pytest

from tfnas import deploy
from tfnas.deploy import quantize
from tfnas.layers import set_path
from tfnas.layers.cell_ops import ENAS_OPS
from tfnas.spaces import SearchSpaceError, get_space

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _small(**config):
    return get_space("enas_micro", {"filters": 8, "cells_per_stage": 1, "cell_nodes": 3,
                                    "input_shape": [16, 16, 3], **config})


def _cell(kind):
    # Every op once; node 0 uses both cell inputs, node 1 uses node 0 twice, node 2 uses
    # input 1 and node 1: nodes 0 and 1 are used, node 2 is the only output.
    return {f"{kind}_0_x_input": 0, f"{kind}_0_x_op": "sep_conv_3x3",
            f"{kind}_0_y_input": 1, f"{kind}_0_y_op": "avg_pool_3x3",
            f"{kind}_1_x_input": 2, f"{kind}_1_x_op": "sep_conv_5x5",
            f"{kind}_1_y_input": 2, f"{kind}_1_y_op": "max_pool_3x3",
            f"{kind}_2_x_input": 1, f"{kind}_2_x_op": "identity",
            f"{kind}_2_y_input": 3, f"{kind}_2_y_op": "sep_conv_3x3"}


def test_nodes_take_two_inputs_and_unused_nodes_form_the_output():
    space = _small()
    hp = kt.HyperParameters()
    space.validate_choices(space.hyperparameters(hp))
    assert len(hp.space) == 2 * 3 * 4  # (input1, op1, input2, op2) per node, two cells
    assert [h.values for h in hp.space if h.name == "normal_2_y_input"] == [[0, 1, 2, 3]]
    assert [h.values for h in hp.space if h.name == "reduce_0_x_op"] == [list(ENAS_OPS)]
    choices = {**_cell("normal"), **_cell("reduce")}
    assert space.unused(choices, "normal", 3) == [4]
    choices["reduce_0_y_input"] = choices["reduce_2_x_input"] = 0  # input 1 joins the output
    assert space.unused(choices, "reduce", 3) == [1, 4]
    model = space.build_model(choices)
    assert model.get_layer("reduce1_concat").output.shape[-1] == 2 * 16
    assert model.get_layer("stage1_cell1_out_conv").kernel.shape == (1, 1, 8, 8)


def test_the_derived_network_computes_what_the_supernet_computes_on_its_path():
    space = _small()
    supernet = space.build_supernet()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    samples = [{**_cell("normal"), **_cell("reduce")}] + [
        {b: space.candidates(b)[rng.integers(len(space.candidates(b)))]
         for b in space.blocks()} for _ in range(3)]
    for choices in samples:
        set_path(supernet, space.supernet_path(choices))
        derived = space.build_model(choices)
        space.inherit_weights(derived, supernet, choices)
        np.testing.assert_allclose(derived(x, training=False),
                                   supernet(x, training=False)[0], rtol=1e-4, atol=1e-4)


def test_every_op_trains_and_exports_to_builtin_tflite_and_int8(tmp_path):
    model = _small().build_model({**_cell("normal"), **_cell("reduce")})
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (32, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 10, 32)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(before, model.trainable_weights))
    saved = deploy.export_saved_model(model, str(tmp_path / "sm"))
    for mode in ("float32", "int8"):
        path = deploy.convert(saved, str(tmp_path / f"{mode}.tflite"), mode,
                              representative_data=[x], calibration_steps=16)
        ops = set(deploy.op_names(path))
        assert not any(op.startswith("Flex") for op in ops), ops
        assert {"AVERAGE_POOL_2D", "MAX_POOL_2D", "DEPTHWISE_CONV_2D", "ADD"} <= ops
        assert np.asarray(deploy.Runner(path)(x[0])).size == 10
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    qat, _, _ = quantize.train_and_convert(model, data, str(tmp_path / "qat.tflite"), epochs=0,
                                           representative_data=[x], calibration_steps=16)
    assert deploy.interpreter(qat).get_input_details()[0]["dtype"] == np.int8


def test_bad_enas_micro_input_is_a_clear_error():
    with pytest.raises(SearchSpaceError, match="filters=9 must be even"):
        get_space("enas_micro", {"filters": 9})
    with pytest.raises(SearchSpaceError, match="cell_nodes must be a positive integer"):
        get_space("enas_micro", {"cell_nodes": 0})
    space = _small()
    with pytest.raises(SearchSpaceError, match="normal_0_x_input.*allowed: \\[0, 1\\]"):
        space.build_model({**_cell("normal"), **_cell("reduce"), "normal_0_x_input": 2})
    with pytest.raises(SearchSpaceError, match="one cell architecture in every layer.*enas"):
        space.build_supernet("gumbel")


def test_enas_searches_the_micro_cells_in_one_trace(tmp_path):
    from tfnas import pipeline
    from tfnas.config import load_config
    from tfnas.run_dir import RunDirectory

    config = load_config(os.path.join(ROOT, "configs", "enas_micro_enas.json"), [
        "data.limit=96", "data.batch_size=32", "search.trials=4", "search.child_steps=1",
        # One node: the trace of the shared step grows with the candidates (about 40 s here).
        'space.config={"filters": 8, "cells_per_stage": 1, "cell_nodes": 1}',
        'search.controller={"learning_rate": 0.05, "samples_per_update": 3}'])
    run = RunDirectory(str(tmp_path / "run"))
    run.save_config(config)
    arch, supernet = pipeline.search(config, run, verbose=0)
    assert arch.metadata["child_step_traces"] == 1
    trials = json.load(open(run.file("logs", "trials.json"), encoding="utf-8"))
    assert len(trials) == 4 and len({json.dumps(t["choices"], sort_keys=True)
                                     for t in trials}) > 1
    space = arch.search_space()
    derived = space.build_model(arch.choices)
    assert pipeline.prepare(config).method.inherit(supernet, arch, derived)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    set_path(supernet, space.supernet_path(arch.choices))
    np.testing.assert_allclose(derived(x, training=False), supernet(x, training=False)[0],
                               rtol=1e-4, atol=1e-4)
