"""The derivation within a budget: the multiple-choice knapsack of `tfnas.budget` against
brute force, and the spaces' derivation groups under it."""

import itertools

import numpy as np
import pytest

from tfnas.budget import BudgetError, most_probable_within
from tfnas.costs import COSTS, count_parameters
from tfnas.layers.cell_ops import NB201_OPS
from tfnas.spaces import get_space
from tfnas.spaces.nasbench201 import choices_from_string

TINY = {"filters": 4, "cells_per_stage": 1, "input_shape": [8, 8, 3]}


def _brute_force(groups, limits, fixed):
    best = None
    for chosen in itertools.product(*(range(len(g)) for g in groups)):
        cost = fixed + sum(g[a][1] for g, a in zip(groups, chosen))
        score = sum(g[a][0] for g, a in zip(groups, chosen))
        if limits[0] <= cost <= limits[1] and (best is None or score > best[0]):
            best = (score, cost)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_knapsack_finds_the_most_probable_combination_within_the_limits(seed):
    rng = np.random.default_rng(seed)
    groups = [[(float(np.log(p)), float(c)) for p, c in
               zip(rng.dirichlet(np.ones(n)), rng.integers(0, 500, n))]
              for n in rng.integers(2, 6, 5)]
    fixed = 1000.0
    total = [fixed + sum(g[a][1] for g, a in zip(groups, chosen))
             for chosen in itertools.product(*(range(len(g)) for g in groups))]
    high = float(np.quantile(total, 0.6))
    limits = (0.98 * high, high)
    expected = _brute_force(groups, limits, fixed)
    chosen, cost = most_probable_within(groups, limits, fixed=fixed)
    assert cost == fixed + sum(g[a][1] for g, a in zip(groups, chosen))
    if expected is None:  # nothing in the window: the nearest combination under it
        assert cost == max(c for c in total if c <= high)
    else:
        assert sum(g[a][0] for g, a in zip(groups, chosen)) == pytest.approx(expected[0])
        assert limits[0] <= cost <= limits[1]


def test_a_limit_below_every_combination_is_an_error_naming_the_cheapest():
    with pytest.raises(BudgetError, match="the cheapest costs 3"):
        most_probable_within([[(0.0, 1.0), (0.0, 2.0)], [(0.0, 2.0)]], (0.0, 2.5))


def test_nasbench201_costs_count_what_the_keras_network_holds():
    space = get_space("nasbench201", TINY)
    cost = COSTS.get("parameters", space=space)
    rng = np.random.default_rng(0)
    for _ in range(8):  # dead nodes included: edges into a node that reaches nothing
        choices = {b: NB201_OPS[rng.integers(5)] for b in space.blocks()}
        assert cost.of_choices(space.effective_choices(choices)) == \
            count_parameters(space.build_model(choices))
    dead = choices_from_string("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
                               "+|skip_connect~0|nor_conv_1x1~1|none~2|")
    assert space.effective_choices(dead)["n2_in0"] == "none"


def test_nasbench201_derives_the_most_probable_architecture_within_the_budget():
    space = get_space("nasbench201", TINY)
    cost = COSTS.get("parameters", space=space)
    rng = np.random.default_rng(1)
    probabilities = {b: list(rng.dirichlet(np.ones(5))) for b in space.blocks()}
    scored = []
    for ops in itertools.product(NB201_OPS, repeat=6):
        choices = dict(zip(space.blocks(), ops))
        scored.append((sum(np.log(probabilities[b][NB201_OPS.index(o)])
                           for b, o in choices.items()),
                       cost.of_choices(space.effective_choices(choices)), choices))
    sizes = sorted({c for _, c, _ in scored})
    high = sizes[len(sizes) // 2]
    limits = (0.98 * high, high)
    best = max((s for s in scored if limits[0] <= s[1] <= limits[1]), key=lambda s: s[0])
    assert space.derive(probabilities, cost=cost, limits=limits) == best[2]
    assert space.derive(probabilities) == max(scored, key=lambda s: s[0])[2]


def test_darts_derives_two_edges_per_node_within_the_budget():
    space = get_space("darts", {"filters": 4, "cells": 3, "input_shape": [8, 8, 3]})
    cost = COSTS.get("parameters", space=space)
    rng = np.random.default_rng(0)
    probabilities = {b: list(rng.dirichlet(np.ones(8))) for b in space.blocks()}
    free = space.derive(probabilities)
    budget = 0.9 * cost.of_choices(free)
    within = space.derive(probabilities, cost=cost, limits=(0.98 * budget, budget))
    assert 0.98 * budget <= cost.of_choices(within) <= budget
    assert cost.of_choices(within) == count_parameters(space.build_model(within))
    for kind in ("normal", "reduce"):
        for i in range(4):
            assert sum(within[f"{kind}_n{i}_in{j}"] != "none" for j in range(i + 2)) == 2
    assert space.cost_range(cost)[0] == cost.minimum()  # parameter-free ops on every kept edge
