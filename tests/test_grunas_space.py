"""Exact figures of the GRUNAS paper network (REFERENCE.md §1)."""

import numpy as np
import pytest

from tfnas.architecture import count_parameters
from tfnas.costs import ParameterCost
from tfnas.spaces import SearchSpaceError, get_space


@pytest.mark.parametrize("groups,params", [
    ([4, 1, 1, 2, 2, 3, 2, 4, 4, 6], 162_430),   # the paper's result
    ([4, 1, 1, 2, 2, 3, 2, 4, 4, 4], 168_574),   # the reference code's logged result
    ([1] * 10, 258_100),
])
def test_paper_network_trainable_parameters_exact(groups, params):
    space = get_space("grunas")
    model = space.build_model(dict(zip(space.blocks(), groups)))
    assert count_parameters(model) == params
    assert model.output_shape == (None, 10)
    assert model.get_layer("unit_1_gconv").input_groups == ([1, 1, 1, 3] if groups[0] == 4
                                                            else [6])


def test_cost_tables_count_the_real_candidate_layers():
    space = get_space("grunas")
    cost = ParameterCost.from_supernet(space.build_supernet())
    h = [4, 1, 1, 2, 2, 3, 2, 4, 4, 6]
    assert cost.of_choices(dict(zip(space.blocks(), h))) == 162_430
    assert cost.fixed == 336 + 24 + 3850  # stem conv + stem BN + classifier
    assert cost.tables["unit_1"][0] == 234


def test_space_rejects_unusable_group_counts_and_unknown_keys():
    with pytest.raises(SearchSpaceError, match="channel shuffle"):
        get_space("grunas", {"candidates": [1, 5]})
    with pytest.raises(SearchSpaceError, match="Unknown configuration keys"):
        get_space("grunas", {"candidate": [1, 2]})
    with pytest.raises(SearchSpaceError, match="Unknown search space 'grunaz'.*grunas"):
        get_space("grunaz")


def test_supernet_returns_logits_and_mixing_weights_per_block():
    space = get_space("grunas", {"widths": [[12, 24], [24, 24]], "candidates": [1, 2]})
    logits, weights = space.build_supernet()(np.zeros((2, 32, 32, 3), "float32"),
                                             training=True)
    assert logits.shape == (2, 10)
    assert sorted(weights) == ["unit_1", "unit_2"]
    np.testing.assert_allclose(np.asarray(weights["unit_1"]).sum(), 1.0, rtol=1e-5)
