"""Training-free search (`search.method: "zero_cost"`) through the pipeline."""

import csv
import json
import os

import pytest

from tfnas import pipeline
from tfnas.config import load_config
from tfnas.errors import ConfigError
from tfnas.methods.candidates import sample_architectures
from tfnas.run_dir import RunDirectory
from tfnas.spaces import get_space

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "configs", "nasbench201_zero_cost.json")


def test_small_spaces_are_enumerated_and_large_ones_sampled_validly():
    grunas = get_space("grunas", {"widths": [[12, 24], [24, 24]], "candidates": [1, 2, 4]})
    every = sample_architectures(grunas, 20, seed=0)
    assert len(every) == 9 and len({json.dumps(c, sort_keys=True) for c in every}) == 9
    darts = get_space("darts", {"filters": 4, "cells": 3, "nodes": 2})
    drawn = sample_architectures(darts, 5, seed=0)
    assert len(drawn) == 5 and drawn == sample_architectures(darts, 5, seed=0)
    for choices in drawn:  # two inputs per node: valid documents
        darts.validate_architecture(choices)
    assert drawn != sample_architectures(darts, 5, seed=1)


def test_zero_cost_search_keeps_the_best_feasible_candidate(tmp_path):
    config = load_config(RECIPE, ["data.limit=64", "data.batch_size=16",
                                  "space.config.filters=4", "search.candidates=6",
                                  "search.constraints.max_parameters=9000"])
    run = RunDirectory(str(tmp_path / "zc"))
    arch, searched = pipeline.search(config, run, verbose=0)
    assert searched is None
    with open(run.file("logs", "candidates.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    # The recipe's proxy is the vote of three.
    assert len(rows) == 6 and {"synflow", "naswot", "jacob_cov", "params", "score",
                               "feasible"} <= set(rows[0])
    feasible = [r for r in rows if r["feasible"] == "True"]
    assert all(float(r["params"]) <= 9000 for r in feasible)
    assert len(feasible) < len(rows)  # the limit excluded some
    best = max(feasible, key=lambda r: float(r["score"]))
    assert arch.choices == json.loads(best["choices"])
    assert arch.metadata["best_candidate"] == int(best["index"])
    assert os.path.getsize(run.file("logs", "score_vs_parameters.png")) > 0


def test_bad_zero_cost_settings_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="search.proxy"):
        load_config(RECIPE, ["search.proxy=synflw"])
    with pytest.raises(ConfigError, match="search.candidates: 0 is less than the minimum"):
        load_config(RECIPE, ["search.candidates=0"])
    config = load_config(RECIPE, ["data.limit=32", "data.batch_size=16",
                                  "space.config.filters=4", "search.candidates=2",
                                  "search.constraints.max_parameters=10"])
    with pytest.raises(ConfigError, match="None of the 2 architectures meets the constraints"):
        pipeline.search(config, RunDirectory(str(tmp_path / "zc")), verbose=0)


def test_zero_cost_pt_makes_its_candidates_by_perturbing_the_untrained_supernet(tmp_path):
    recipe = os.path.join(ROOT, "configs", "nasbench201_zero_cost_pt.json")
    config = load_config(recipe, ["data.limit=64", "data.batch_size=16",
                                  "space.config.filters=4", "search.candidates=2"])
    arch, searched = pipeline.search(config, RunDirectory(str(tmp_path / "pt")), verbose=0)
    assert searched is None and arch.metadata["selection"] == "perturbation"
    with open(os.path.join(tmp_path, "pt", "logs", "candidates.csv"), newline="",
              encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    # Two passes in two orders: one or two distinct cells, the best of them kept.
    assert 1 <= len(rows) <= 2
    assert arch.choices == json.loads(max(rows, key=lambda r: float(r["naswot"]))["choices"])
    with pytest.raises(ConfigError, match="perturbation measures the supernet with one proxy"):
        load_config(recipe, ['search.proxy=["naswot", "snip"]'])
    with pytest.raises(ConfigError, match="search.selection"):
        load_config(recipe, ["search.selection=perturb"])
