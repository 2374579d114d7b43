"""The NAS-Bench-201 space: the benchmark's networks, parameter for parameter, and its strings."""

import numpy as np
import pytest

from conftest import assert_trains_and_exports
from tfnas import SearchModel
from tfnas.costs import count_parameters
from tfnas.spaces import SearchSpaceError, get_space
from tfnas.spaces.nasbench201 import arch_string, choices_from_string

ALL_CONV3 = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
             "+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")
MIXED = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
         "+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|")


@pytest.mark.parametrize("text, parameters", [
    # The benchmark's model code (D-X-Y/AutoDL-Projects, xautodl/models/cell_infers/
    # tiny_network.py TinyNetwork(C=16, N=5), cells.py InferCell, cell_operations.py
    # ReLUConvBN/ResNetBasicblock), counted by hand: stem 464, residual blocks 14,464 and
    # 57,600, head BN 128, classifier 650 (73,306 in all, every edge none); per cell a 3x3
    # ReLUConvBN costs 2,336 / 9,280 / 36,992 in the three stages, a 1x1 288 / 1,088 / 4,224.
    (ALL_CONV3, 73_306 + 5 * 6 * (2_336 + 9_280 + 36_992)),  # 1,531,546: the space's largest
    (MIXED, 73_306 + 5 * (2 * (2_336 + 9_280 + 36_992) + 288 + 1_088 + 4_224)),  # 587,386
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", 73_306),
])
def test_networks_have_the_benchmark_codes_parameter_counts(text, parameters):
    space = get_space("nasbench201")
    model = space.build_model(choices_from_string(text))
    assert count_parameters(model) == parameters
    assert parameters in (1_531_546, 587_386, 73_306)


def test_strings_convert_both_ways_and_bad_strings_say_what_is_wrong():
    choices = choices_from_string(MIXED)
    assert choices["n3_in2"] == "skip_connect" and choices["n2_in1"] == "avg_pool_3x3"
    assert arch_string(choices) == MIXED
    assert get_space("nasbench201").arch_string(choices) == MIXED
    with pytest.raises(SearchSpaceError, match=r"3 nodes .* with \[1, 2\] edges"):
        choices_from_string("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|")
    with pytest.raises(SearchSpaceError, match=r"with \[1, 2, 2\] edges"):
        choices_from_string("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|")
    with pytest.raises(SearchSpaceError, match="Unknown op 'conv_5x5'"):
        choices_from_string(ALL_CONV3.replace("nor_conv_3x3~1|+", "conv_5x5~1|+"))
    with pytest.raises(SearchSpaceError, match="names input 2"):
        choices_from_string(ALL_CONV3.replace("nor_conv_3x3~1|+", "nor_conv_3x3~2|+"))
    with pytest.raises(SearchSpaceError, match="choices_from_string"):
        get_space("nasbench201").build_model(MIXED)


def test_supernet_cells_share_one_architecture_and_derive_the_strongest_ops():
    space = get_space("nasbench201", {"filters": 4, "cells_per_stage": 2,
                                      "input_shape": [8, 8, 3]})
    search = SearchModel(space.build_supernet("softmax"))
    assert len(search.mixed_ops) == 3 * 2 * 6
    assert [op.name for op in search.logit_ops] == space.blocks()
    assert len(search.architecture_variables) == 6
    target = choices_from_string(MIXED)
    for op in search.logit_ops:
        op.logits.assign(np.where(np.array(op.choices) == target[op.name], 1.0, 0.0))
    assert search.derive_architecture(space).choices == target


def test_derived_network_trains_and_exports_with_builtin_ops(tmp_path):
    space = get_space("nasbench201", {"filters": 4, "cells_per_stage": 1,
                                      "input_shape": [16, 16, 3]})
    model = space.build_model(choices_from_string(MIXED))
    assert_trains_and_exports(model, tmp_path, {"CONV_2D", "AVERAGE_POOL_2D", "ADD", "MEAN"})
    with pytest.raises(SearchSpaceError, match="inherit"):
        space.inherit_weights(model, None, choices_from_string(MIXED))


def test_enas_drives_every_cell_with_the_one_sampled_cell(tmp_path):
    # The cells of a kind share one architecture: the op of each later cell runs the
    # choice of the block whose logits it shares (this was a set_path traceback).
    from conftest import enas_search
    from tfnas.layers.chosen_path import set_path
    from tfnas.layers.mixed_op import mixed_ops

    config, arch, supernet, trials = enas_search(
        tmp_path / "enas", "nasbench201_enas.json",
        ["search.trials=3", "search.child_steps=2", "space.config.filters=4",
         "space.config.cells_per_stage=1"])
    assert len(trials) == 3 and all(t["status"] == "COMPLETED" for t in trials)
    space = get_space("nasbench201", config["space"]["config"])
    ops = mixed_ops(supernet)
    assert len(ops) == 6 * 3 and sum(op.owns_logits for op in ops) == 6  # a cell a stage
    for trial in trials:
        set_path(supernet, space.supernet_path(trial["choices"]))
        for op in ops:
            block = op.name if op.owns_logits else op._logits_from.name
            assert op.choices[int(op.mixing_state["executed"].numpy())] == \
                trial["choices"][block], op.name
    space.validate_choices(arch.choices)
