"""Perturbation-based selection (`tfnas.perturbation`): DARTS-PT and Zero-Cost-PT."""

import os

import numpy as np
import pytest

from tfnas import perturbation, pipeline
from tfnas.config import load_config
from tfnas.errors import ConfigError
from tfnas.layers.mixed_op import mixed_ops
from tfnas.run_dir import RunDirectory
from tfnas.spaces import get_space

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "configs", "nasbench201_dca_cpu.json")


def test_each_candidate_is_switched_off_alone_and_the_decided_ones_stay_fixed():
    space = get_space("nasbench201", {"filters": 4, "cells_per_stage": 1})
    supernet = space.build_supernet("softmax")
    ops = mixed_ops(supernet)
    owners = [op for op in ops if op.owns_logits]
    for k, op in enumerate(owners):  # distinct α, so that "left as they are" is visible
        op.logits.assign(np.linspace(-1, 1, 5) * (k + 1) / 3)
    before = [v.numpy().copy() for v in supernet.variables]
    rules = [type(op.mixing) for op in ops]
    seen = []

    def measure():
        # What every op (followers read their owner's) mixes with; candidate 2 (nor_conv_1x1)
        # is what this measure rewards, so its removal lowers it most.
        given = {op.name: op.mixing_state.numpy().copy() for op in ops}
        for op in ops:
            owner = op.name if op.owns_logits else op._logits_from.name  # pylint: disable=protected-access
            assert np.array_equal(given[op.name], given[owner])
        seen.append({op.name: given[op.name] for op in owners})
        return sum(w[2] for w in seen[-1].values()) + 0.01 * sum(w[4] for w in seen[-1].values())

    scores, decisions = perturbation.select(supernet, measure, seed=3)
    assert [d["block"] for d in decisions] == list(
        np.random.default_rng(3).permutation(sorted(op.name for op in owners)))
    calls = iter(seen)
    decided = {}
    for d in decisions:
        op = next(o for o in owners if o.name == d["block"])
        alpha = np.exp(op.logits.numpy()) / np.exp(op.logits.numpy()).sum()
        base = next(calls)
        np.testing.assert_allclose(base[op.name], alpha, rtol=1e-6)
        for i in range(5):
            off = next(calls)[op.name]
            expected = alpha.copy()
            expected[i] = 0.0  # the others not renormalized
            np.testing.assert_allclose(off, expected, rtol=1e-6)
        for name, kept in decided.items():  # earlier decisions: one-hot
            np.testing.assert_array_equal(base[name], np.eye(5)[kept])
        assert d["kept"] == 2 and int(np.argmax(d["drops"])) == 2
        decided[op.name] = d["kept"]
    assert next(calls, None) is None
    assert set(scores) == {op.name for op in owners}
    assert all(int(np.argmax(s)) == 2 for s in scores.values())
    assert space.derive(scores) == dict.fromkeys(space.blocks(), "nor_conv_1x1")
    # Nothing of the supernet changed: weights, logits and each op's own rule.
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, supernet.variables))
    assert [type(op.mixing) for op in ops] == rules


def test_zero_cost_pt_scores_the_untrained_supernet_without_its_switched_off_candidates():
    space = get_space("nasbench201", {"filters": 4, "cells_per_stage": 1})
    supernet = space.build_supernet("softmax")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 10, 16)
    naswot = perturbation.proxy_measure(supernet, images, proxy="naswot")
    conv3x3 = [op.candidates[3] for op in mixed_ops(supernet)]
    calls = []
    for layer in conv3x3:
        layer.__dict__["call"] = lambda *a, _call=layer.call, **k: calls.append(1) or _call(*a, **k)
    try:
        with perturbation.given_weights(supernet) as given:
            whole = naswot()
            assert np.isfinite(whole) and len(calls) == len(conv3x3)
            # nor_conv_3x3 (index 3) off everywhere: not run, so its ReLUs are not recorded.
            for variable in given.values():
                variable.assign(np.array([0.2, 0.2, 0.2, 0.0, 0.2], "float32"))
            assert naswot() != whole and len(calls) == len(conv3x3)
    finally:
        for layer in conv3x3:
            layer.__dict__.pop("call")
    scores, decisions = perturbation.select(
        supernet, perturbation.proxy_measure(supernet, images, labels, "snip"), seed=0)
    choices = space.derive(scores)
    assert [choices[d["block"]] == space.candidates(d["block"])[d["kept"]]
            for d in decisions] == [True] * 6


def test_darts_pt_derives_through_the_search(tmp_path):
    config = load_config(RECIPE, [
        "data.limit=64", "data.batch_size=32", "space.config.filters=4", "search.epochs=1",
        "search.warmup_epochs=0", 'search.penalty={"type": "none"}',
        'search.selection={"type": "perturbation", "measure": "accuracy", "batches": 1}'])
    arch, _ = pipeline.search(config, RunDirectory(str(tmp_path / "pt")), verbose=0)
    selection = arch.metadata["selection"]
    assert selection["type"] == "perturbation" and selection["measure"] == "accuracy"
    assert len(selection["decisions"]) == 6  # one per edge of the shared cell
    space = arch.search_space()
    for d in selection["decisions"]:  # the op kept is the op the document has
        assert arch.choices[d["block"]] == space.candidates(d["block"])[d["kept"]]
        assert np.all(np.isfinite(d["drops"])) and all(-1 <= x <= 1 for x in d["drops"])


def test_bad_selection_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="search.selection.measure"):
        load_config(RECIPE, ['search.selection={"type": "perturbation", "measure": "synflow"}'])
    with pytest.raises(ConfigError, match="search.selection.type"):
        load_config(RECIPE, ['search.selection={"type": "pt"}'])
    with pytest.raises(ConfigError, match="search.selection.batches"):
        load_config(RECIPE, ['search.selection={"type": "perturbation", "batches": 0}'])
    supernet = get_space("nasbench201", {"filters": 4, "cells_per_stage": 1}).build_supernet()
    with pytest.raises(ValueError, match="cannot measure with 'synflow'"):
        perturbation.proxy_measure(supernet, np.zeros((2, 32, 32, 3), "float32"),
                                   proxy="synflow")
