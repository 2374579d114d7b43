"""DCA-NAS's constraint: a Lagrange multiplier in the traced search step, costs of the
derived networks, budgets checked against the space."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import counting_search_model
from tfnas.backup import TrainingBackup
from tfnas.costs import COSTS, ParameterCost
from tfnas.errors import ConfigError
from tfnas.penalties import LagrangianPenalty
from tfnas.spaces import get_space
from tfnas.spaces.nasbench201 import choices_from_string

TINY = {"filters": 4, "cells_per_stage": 1, "input_shape": [8, 8, 3]}
MIXED = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
         "+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|")


CountingSearchModel = counting_search_model()


def _split(seed):
    rng = np.random.default_rng(seed)
    return tf.data.Dataset.from_tensor_slices(
        (rng.uniform(0, 255, (16, 8, 8, 3)).astype("float32"), rng.integers(0, 10, 16))).batch(8)


def _search(budget_fraction, rate=0.5):
    space = get_space("nasbench201", TINY)
    cost = ParameterCost.from_space(space)
    uniform = float(cost({b: np.full(5, 0.2, "float32") for b in space.blocks()}))
    penalty = LagrangianPenalty(budget=budget_fraction * uniform, rate=rate)
    model = CountingSearchModel(space.build_supernet("softmax"), cost=cost, penalty=penalty)
    model.compile(optimizer="sgd", arch_optimizer=keras.optimizers.Adam(0.05))
    return model, penalty, uniform


def test_costs_of_the_new_spaces_are_the_derived_networks_counts():
    from tfnas.costs import count_parameters

    space = get_space("nasbench201", TINY)
    choices = choices_from_string(MIXED)
    for name in ("parameters", "macs"):
        cost = COSTS.get(name, space=space)
        assert cost.minimum() == cost.of_choices(choices_from_string(
            "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"))
    assert COSTS.get("parameters", space=space).of_choices(choices) == \
        count_parameters(space.build_model(choices))
    memory = COSTS.get({"type": "memory", "bytes_per_parameter": 1}, space=space)
    assert memory.unit == "bytes"
    assert memory.of_choices(choices) == count_parameters(space.build_model(choices))
    # Node 2 unused (n3_in2 none): the benchmark's code, and the cost, count its two edges
    # (a 3x3 conv in each stage: 152 + 592 + 2,336); the Keras model leaves them out, as
    # they compute nothing that reaches the output.
    dead = {**choices, "n3_in2": "none"}
    assert COSTS.get("parameters", space=space).of_choices(dead) == \
        count_parameters(space.build_model(dead)) + 3_080


def test_multiplier_rises_over_the_bound_falls_to_zero_under_it_in_one_trace():
    CountingSearchModel.traces = 0
    model, penalty, uniform = _search(0.5)
    train, val = _split(0), _split(1)
    over = model.fit(train, arch_data=val, epochs=2, verbose=0)
    lam = over.history["lagrange_multiplier"]
    assert 0 < lam[0] < lam[1]  # cost over the bound: the multiplier climbs
    assert model.expected_cost() < uniform  # and pushes the expected cost down
    penalty.bound.assign(10 * uniform)  # a callback may move the bound: no retrace
    under = model.fit(train, arch_data=val, epochs=2, verbose=0)
    assert under.history["lagrange_multiplier"][-1] == 0.0  # projected: never below 0
    assert under.history["constraint_bound"][-1] == pytest.approx(10 * uniform)
    assert CountingSearchModel.traces == 2  # once per phase


def test_tracked_bound_moves_by_the_gap_between_derived_and_expected_cost_in_one_trace():
    CountingSearchModel.traces = 0
    space = get_space("nasbench201", TINY)
    cost = ParameterCost.from_space(space)
    budget = 0.6 * cost.of_choices(choices_from_string(MIXED))
    penalty = LagrangianPenalty(budget=budget, rate=0.5, bound="derived", tolerance=0.02,
                                track_every=1)
    model = CountingSearchModel(space.build_supernet("softmax"), cost=cost, penalty=penalty)
    model.compile(optimizer="sgd", arch_optimizer=keras.optimizers.Adam(0.05))
    seen = []

    def measure():
        seen.append((model.expected_cost(), model.derived_cost(space)))
        return seen[-1]

    callbacks = penalty.callbacks(measure)
    history = model.fit(_split(0), arch_data=_split(1), epochs=2, verbose=0,
                        callbacks=callbacks)
    assert len(seen) == 2 * (4 + 1)  # every batch (track_every=1) and every epoch end
    assert history.history["derived_cost"][-1] == seen[-1][1]
    target = budget * 0.99  # the middle of [0.98 K, K]
    aims = [target - (derived - expected) for expected, derived in seen[-2:]]
    bound = history.history["constraint_bound"][-1]  # the last step's, before two moves
    for aim in aims:  # the last batch's end, then the epoch's
        bound = 0.5 * (bound + aim)
    assert float(penalty.bound) == pytest.approx(bound, rel=1e-5)
    assert CountingSearchModel.traces == 2  # once per phase
    arch = model.derive_architecture(space, limits=penalty.derivation_limits())
    assert arch.parameters <= budget
    assert penalty.derivation_limits() == (pytest.approx(0.98 * budget), budget)


def test_a_restored_search_keeps_the_multiplier_and_the_bound(tmp_path):
    model, penalty, _ = _search(0.5)
    backup = TrainingBackup(str(tmp_path / "backup"))
    model.fit(_split(0), arch_data=_split(1), epochs=1, verbose=0, callbacks=[backup])
    penalty.bound.assign(123.0)
    saved = float(penalty.multiplier)
    assert saved > 0
    model.fit(_split(0), arch_data=_split(1), epochs=2, initial_epoch=1, verbose=0,
              callbacks=[backup])
    resumed, resumed_penalty, _ = _search(0.5)
    assert TrainingBackup(str(tmp_path / "backup")).restore(resumed) == 2
    assert float(resumed_penalty.multiplier) == float(penalty.multiplier) != saved
    assert float(resumed_penalty.bound) == 123.0


def test_a_budget_outside_the_spaces_networks_names_the_limit():
    space = get_space("nasbench201", TINY)
    cost = ParameterCost.from_space(space)
    smallest, largest = space.cost_range(cost)
    assert smallest == cost.minimum()  # every edge none
    assert largest == cost.of_choices({b: "nor_conv_3x3" for b in space.blocks()})
    with pytest.raises(ConfigError, match=f"smallest network of the space, {smallest:g} "
                                          "parameters"):
        LagrangianPenalty(budget=smallest - 1).check_cost(cost, smallest, largest)
    LagrangianPenalty(budget=smallest).check_cost(cost, smallest, largest)
    with pytest.raises(ConfigError, match=f"at or above the largest network of the space, "
                                          f"{largest:g} parameters: it can never bind"):
        LagrangianPenalty(budget=1e12).check_cost(cost, smallest, largest)
    from tfnas import penalties

    with pytest.raises(ConfigError, match="switches take true or false"):
        penalties.get({"type": "lagrangian", "budget": 1e5, "normalize": 1})
    with pytest.raises(ConfigError, match="finite numbers"):
        penalties.get({"type": "lagrangian", "budget": True})
    with pytest.raises(ValueError, match="bound is 'budget'.*'derived'.*got 'tracked'"):
        penalties.get({"type": "lagrangian", "budget": 1e5, "bound": "tracked"})
    with pytest.raises(ValueError, match=r"tolerance is a fraction .* got 2"):
        penalties.get({"type": "lagrangian", "budget": 1e5, "tolerance": 2})
    fixed = penalties.get({"type": "lagrangian", "budget": 1e5, "bound": 8e4})
    assert float(fixed.bound) == 8e4 and fixed.callbacks(None) == []


def test_the_shipped_recipe_derives_within_its_budget_and_an_empty_window_is_refused():
    from itertools import product

    from tfnas import pipeline
    from tfnas.budget import reachable_costs
    from tfnas.config import load_config

    recipe = os.path.join(os.path.dirname(__file__), "..", "configs",
                          "nasbench201_dca_cpu.json")
    prepared = pipeline.prepare(load_config(recipe))
    space, penalty = prepared.space, prepared.method.penalty
    cost = ParameterCost.from_space(space)
    low, high = penalty.derivation_limits()
    assert (low, high) == (0.98 * penalty.budget, penalty.budget)
    # Every cell's cost, enumerated (5^6), is what the dynamic program reaches.
    ops = space.candidates("n1_in0")
    every = {cost.of_choices(space.effective_choices(dict(zip(space.blocks(), cell))))
             for cell in product(ops, repeat=6)}
    assert reachable_costs(space.cost_groups(cost), fixed=cost.fixed) == sorted(every)
    # Whatever the supernet's probabilities, the derived cell lies in the window: the
    # budget holds on every seed without a sweep.
    rng = np.random.default_rng(0)
    for _ in range(20):
        probabilities = {b: list(rng.dirichlet(np.ones(5) * 0.3)) for b in space.blocks()}
        choices = space.derive(probabilities, cost=cost, limits=(low, high))
        assert low <= cost.of_choices(space.effective_choices(choices)) <= high
    # At 40,000 parameters no cell of this space costs within 2 %: refused before the run.
    with pytest.raises(ConfigError, match=(
            r"^search.penalty: no architecture of the nasbench201 space costs within the "
            r"tolerance, 39,200 to 40,000 parameters \(budget 40,000, tolerance 0.02\); the "
            r"nearest costs are 38,226 below and 43,154 above. Set the budget to a cost the "
            r"space has, or widen the tolerance.$")):
        pipeline.prepare(load_config(recipe, ["search.penalty.budget=40000"]))


def test_budget_graph_sweeps_bounds_inverts_the_curve_and_resumes(tmp_path, cli):
    recipe = os.path.join(os.path.dirname(__file__), "..", "configs",
                          "nasbench201_dca_cpu.json")
    tiny = ["--set", "search.epochs=1", "--set", "search.warmup_epochs=0", "--set",
            "data.limit=64", "--set", "space.config.filters=4", "--set",
            "search.penalty.budget=9000", "--verbose=0"]
    run_dir = str(tmp_path / "graph")
    args = ["budget-graph", "--config", recipe, "--bounds", "5000,15000", "--budget", "9000",
            "--run_dir", run_dir, *tiny]
    result = cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(run_dir, "budget_graph.json"), encoding="utf-8") as f:
        graph = json.load(f)
    assert [p["bound"] for p in graph["points"]] == [5000, 15000]
    for point in graph["points"]:
        with open(os.path.join(point["run"], "architecture.json"), encoding="utf-8") as f:
            arch = json.load(f)
        assert arch["metadata"]["penalty"]["budget"] == point["bound"]
        assert arch["metadata"]["penalty"]["bound"] == "budget"  # the paper's K' = K
        assert point["derived_cost"] == arch["parameters"]
    from tfnas.budget_graph import bound_for

    assert (graph["bound"], graph["budget_inside_graph"]) == bound_for(graph["points"], 9000)
    assert os.path.getsize(os.path.join(run_dir, "budget_graph.png")) > 0
    assert f"search.penalty.bound={graph['bound']:.6g}" in result.stdout
    resumed = cli(*args, "--resume")  # both searches are finished: loaded, not rerun
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("the search is complete") == 2
    bad = cli("budget-graph", "--config", recipe, "--set", 'search.penalty={"type": "none"}',
              "--run_dir", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "sweeps search.penalty.budget" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not os.path.exists(tmp_path / "bad")
    # Checked while the run is prepared, before its directory is made.
    from tfnas import pipeline
    from tfnas.config import load_config

    with pytest.raises(ConfigError, match="below the smallest network of the space"):
        pipeline.prepare(load_config(recipe, overrides=["search.penalty.budget=100"]))
