"""The ShuffleNASNet cell space: the shipped models' exact sizes, training, TFLite and int8."""

import json
import os

import keras_tuner as kt
import numpy as np
import pytest

from conftest import assert_trains_and_exports, enas_search
from tfnas.architecture import Architecture
from tfnas.spaces import SearchSpaceError, get_space
from tfnas.spaces.shufflenasnet import CELL_A, CELL_B, OPS, PAPER_MODELS, cell_choices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Trainable parameters of the shipped cells in the paper's five models, exactly, and the
# paper's (rounded) counts: the cells are ours (the paper's are in a figure), within 5 %.
COUNTS = {"A_12_36": 236_422, "A_15_48": 485_866, "A_15_64": 834_698,
          "B_15_96": 1_821_898, "B_15_128": 3_176_714}


@pytest.mark.parametrize("model", sorted(COUNTS))
def test_the_shipped_models_have_the_papers_sizes(model):
    cell, per_stage, filters, paper = PAPER_MODELS[model]
    # The architecture document tfnas ships for the model (tfnas train --architecture ...).
    arch = Architecture.load(os.path.join(ROOT, "configs", "architectures",
                                          f"shufflenasnet_{model.lower()}.json"))
    assert arch.choices == cell_choices(cell)
    assert (arch.space_config["filters"], arch.space_config["cells_per_stage"]) == \
        (filters, per_stage)
    built = arch.search_space().build_model(arch.choices)
    count = sum(int(np.prod(w.shape)) for w in built.trainable_weights)
    assert count == COUNTS[model]
    assert abs(count / paper - 1) < 0.05
    # No biases in the cells: only the classifier has one.
    assert [w.name for w in built.trainable_weights if w.name == "bias"] == ["bias"]


def _small():
    return get_space("shufflenasnet", {"filters": 8, "cells_per_stage": 1,
                                       "input_shape": [16, 16, 3], "cell_blocks": 3})


def test_every_op_trains_and_exports_to_builtin_tflite_and_int8(tmp_path):
    space = _small()
    # Every op once, on the cell input and on a block, in both cells.
    choices = {"normal_0_input": 0, "normal_0_op": "min_pool_3x3",
               "normal_1_input": 1, "normal_1_op": "sep_conv_5x5",
               "normal_2_input": 0, "normal_2_op": "conv_1x1",
               "reduce_0_input": 0, "reduce_0_op": "identity",
               "reduce_1_input": 0, "reduce_1_op": "sep_conv_3x3",
               "reduce_2_input": 2, "reduce_2_op": "max_pool_3x3"}
    assert_trains_and_exports(space.build_model(choices), tmp_path,
                              {"NEG", "MAX_POOL_2D", "DEPTHWISE_CONV_2D", "SPLIT"})


def test_each_block_is_a_keras_tuner_choice():
    space = _small()
    hp = kt.HyperParameters()
    choices = space.hyperparameters(hp)
    space.validate_choices(choices)
    assert hp.get("normal_2_input") == 0 and len(hp.space) == 12
    assert [h.values for h in hp.space if h.name == "reduce_2_input"] == [[0, 1, 2]]
    assert [h.values for h in hp.space if h.name == "normal_0_op"] == [list(OPS)]


def test_bad_shufflenasnet_input_is_a_clear_error():
    with pytest.raises(SearchSpaceError, match="filters=9 must be even"):
        get_space("shufflenasnet", {"filters": 9})
    space = get_space("shufflenasnet")
    bad = {**cell_choices(CELL_A), "normal_1_input": 2}
    with pytest.raises(SearchSpaceError, match="normal_1_input.*allowed: \\[0, 1\\]"):
        space.build_model(bad)
    with pytest.raises(SearchSpaceError, match="one cell architecture in every layer.*enas"):
        space.build_supernet("gumbel")
    with pytest.raises(SearchSpaceError, match="reduce_0_input.*allowed: \\[0\\]"):
        space.supernet_path({**cell_choices(CELL_A), "reduce_0_input": 1})
    assert cell_choices(CELL_B)["reduce_0_op"] == "sep_conv_5x5"


def test_enas_searches_the_cells_in_one_trace_and_the_derived_network_inherits_them(tmp_path):
    from tfnas.layers import set_path

    _, arch, supernet, trials = enas_search(tmp_path / "run", "shufflenasnet_enas.json", [
        "search.trials=6", "search.child_steps=2",
        'space.config={"filters": 8, "cells_per_stage": 1, "cell_blocks": 2}'])
    # Six sampled cells (and the shorter last batch of an epoch) ran in one traced step.
    assert arch.metadata["child_step_traces"] == 1
    assert len({json.dumps(t["choices"], sort_keys=True) for t in trials}) > 1
    space = arch.search_space()
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    for choices in [arch.choices] + [t["choices"] for t in trials[:2]]:
        # The derived network of a path computes what the supernet computes on it.
        set_path(supernet, space.supernet_path(choices))
        derived = space.build_model(choices)
        space.inherit_weights(derived, supernet, choices)
        np.testing.assert_allclose(derived(x, training=False),
                                   supernet(x, training=False)[0], rtol=1e-4, atol=1e-4)
