"""The original ENAS micro space: cells of two-input nodes, weight sharing, TFLite and int8."""

import json

import keras_tuner as kt
import numpy as np
import pytest

from conftest import assert_trains_and_exports, enas_search
from tfnas.layers import set_path
from tfnas.layers.cell_ops import ENAS_OPS
from tfnas.spaces import SearchSpaceError, get_space


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
    # Its ops (separable convs, pools, identity) are DARTS's, whose native QAT conversion
    # test_darts checks; QAT here would add 20 s for nothing new.
    assert_trains_and_exports(model, tmp_path,
                              {"AVERAGE_POOL_2D", "MAX_POOL_2D", "DEPTHWISE_CONV_2D", "ADD"},
                              qat=False)


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

    config, arch, supernet, trials = enas_search(tmp_path / "run", "enas_micro_enas.json", [
        "search.trials=4", "search.child_steps=1",
        # One node: the trace of the shared step grows with the candidates (about 40 s here).
        'space.config={"filters": 8, "cells_per_stage": 1, "cell_nodes": 1}'])
    assert arch.metadata["child_step_traces"] == 1
    assert len(trials) == 4 and len({json.dumps(t["choices"], sort_keys=True)
                                     for t in trials}) > 1
    space = arch.search_space()
    derived = space.build_model(arch.choices)
    assert pipeline.prepare(config).method.inherit(supernet, arch, derived)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    set_path(supernet, space.supernet_path(arch.choices))
    np.testing.assert_allclose(derived(x, training=False), supernet(x, training=False)[0],
                               rtol=1e-4, atol=1e-4)
