"""The `tuner` search method: keras-tuner tuners over a tfnas space, through the pipeline."""

import json
import os

import keras_tuner as kt
import pytest

from tfnas import pipeline
from tfnas.architecture import Architecture
from tfnas.config import load_config
from tfnas.errors import ConfigError
from tfnas.run_dir import RunDirectory
from tfnas.spaces import get_space

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANDOM = os.path.join(ROOT, "configs", "grunas_random.json")
SMALL = ["data.limit=96", "data.batch_size=48", "search.trial_epochs=1",
         'space.config.widths=[[12,24],[24,24],[24,48]]', "space.config.candidates=[1,2,4]"]


def _search(tmp_path, *overrides):
    config = load_config(RANDOM, [*SMALL, *overrides])
    run = RunDirectory(str(tmp_path / "run"))
    run.save_config(config)
    arch, searched = pipeline.search(config, run, verbose=0)
    return config, run, arch, searched


def test_each_block_is_one_keras_tuner_choice():
    space = get_space("grunas", {"candidates": [1, 2, 4]})
    hp = kt.HyperParameters()
    choices = space.hyperparameters(hp)
    assert list(choices) == space.blocks() and set(choices.values()) == {1}
    assert [p.values for p in hp.space] == [[1, 2, 4]] * len(space.blocks())
    hp.values["unit_3"] = 4
    assert space.hyperparameters(hp)["unit_3"] == 4
    # Candidates that keras-tuner cannot hold (lists, mixed types) are chosen by position.
    resnet = get_space("resnet50", {"depths": [1, 1, 1, 1], "input_shape": [32, 32, 3]})
    block = resnet.blocks()[0]
    hp = kt.HyperParameters()
    assert resnet.hyperparameters(hp)[block] in resnet.candidates(block)


def test_random_search_writes_the_architecture_document_and_its_trials(tmp_path):
    # In penalty mode every trial trains, and its objective is penalized by its excess.
    config, run, arch, searched = _search(tmp_path, 'search.tuner={"type": "random", '
                                                    '"max_trials": 2}',
                                          "search.constraints.max_parameters=5000",
                                          "search.constraints.mode=penalty",
                                          "search.constraints.weight=0.5")
    saved = Architecture.load(run.file("architecture.json"))
    assert saved.choices == arch.choices and saved.metadata["method"] == "tuner"
    trials = json.loads(open(run.file("logs", "trials.json"), encoding="utf-8").read())
    assert len(trials) == 2 and all(t["status"] == "COMPLETED" for t in trials)
    best = max(trials, key=lambda t: t["score"])
    assert best["choices"] == arch.choices
    assert 0 <= best["metrics"]["val_accuracy"] <= 1
    for t in trials:
        params = get_space("grunas", arch.space_config).build_model(t["choices"]).count_params()
        excess = max(0.0, params / 5000 - 1)
        assert t["score"] == pytest.approx(t["metrics"]["val_accuracy"] - 0.5 * excess,
                                           abs=1e-6)
    # train.inherit starts training from the best trial's weights.
    model, summary = pipeline.train({**config, "train": {**config["train"], "epochs": 0}}, run,
                                    arch, searched=searched, verbose=0)
    assert 0 <= summary["test_accuracy"] <= 1
    # A finished search is loaded, not run again: same document, same weights.
    again, searched_again = pipeline.search(config, run, verbose=0)
    assert again.choices == arch.choices
    assert all((a == b).all() for a, b in zip(searched, searched_again))


@pytest.mark.parametrize("tuner", ["random", "evolution"])
def test_infeasible_trials_are_reported_to_the_oracle(tmp_path, tuner):
    with pytest.raises(ConfigError, match="No trial of the tuner met the constraints"):
        _search(tmp_path, f'search.tuner={{"type": "{tuner}", "max_trials": 2}}',
                "search.constraints.max_parameters=10")
    trials = json.loads((tmp_path / "run" / "logs" / "trials.json").read_text())
    assert [t["status"] for t in trials] == ["FAILED", "FAILED"]
    assert "infeasible: parameters" in trials[0]["message"]


def test_a_warm_started_enas_controller_trains_the_best_ranked_architectures_first(tmp_path):
    # The ENAS controller is pre-trained toward them too (tests/test_enas_oracle.py); the
    # other oracles take them through tfnas.tuners.warm_start (tests/test_evolution_oracle.py).
    import csv  # pylint: disable=import-outside-toplevel

    _, run, _, _ = _search(tmp_path, 'search.tuner={"type": "enas", "max_trials": 3, '
                                     '"pretrain_steps": 5}',
                           'search.warm_start={"proxy": "params", "candidates": 6, '
                           '"trials": 2}')
    with open(run.file("logs", "warm_start.csv"), newline="", encoding="utf-8") as f:
        ranked = list(csv.DictReader(f))
    assert len(ranked) == 2 and float(ranked[0]["score"]) >= float(ranked[1]["score"])
    trials = json.loads(open(run.file("logs", "trials.json"), encoding="utf-8").read())
    assert [t["choices"] for t in trials[:2]] == [json.loads(r["choices"]) for r in ranked]
    assert len(trials) == 3 and trials[2]["choices"] not in [t["choices"] for t in trials[:2]]


def test_evolution_trains_the_proxys_best_child_of_each_winner(tmp_path):
    # EvolutionOracle's ranking itself: tests/test_evolution_oracle.py. Here: the tuner
    # method builds each child untrained and scores it with the warm start's proxy.
    _, run, _, _ = _search(tmp_path, 'search.tuner={"type": "evolution", "max_trials": 4, '
                                     '"population_size": 2}',
                           'search.warm_start={"proxy": "params", "candidates": 4, '
                           '"trials": 2, "mutations": 3}')
    trials = json.loads(open(run.file("logs", "trials.json"), encoding="utf-8").read())
    assert len(trials) == 4 and all(t["status"] == "COMPLETED" for t in trials)
    for k in (2, 3):  # children: one block away from an earlier trial
        assert min(sum(trials[k]["choices"][b] != t["choices"][b] for b in t["choices"])
                   for t in trials[:k]) == 1


@pytest.mark.parametrize("override, message", [
    ('search.warm_start={"proxy": "params", "mutations": 4}', "search.warm_start.mutations "
                                                              "ranks the children of "
                                                              "evolution; the 'random' tuner "
                                                              "has none"),
    ('search.tuner={"type": "evolution", "mutation_scorer": 1}', "search.tuner.mutation_scorer "
                                                                 "is set by tfnas"),
    ('search.tuner={"type": "random", "seed": 3}', "search.tuner.seed is set by tfnas"),
    ('search.warm_start={"proxy": "snipp"}', "search.warm_start"),
    ('search.warm_start={"proxy": "naswot", "candiates": 9}', "search.warm_start"),
    ('search.tuner={"type": "evolutionary"}', "search.tuner: Unknown keras-tuner tuner "
                                              "'evolutionary'; choose one of ['bayesian', "
                                              "'enas', 'evolution', 'hyperband', 'random']"),
    ('search.tuner={"type": "evolution", "population_size": 1}', "1 is less than the "
                                                                 "minimum of 2"),
    ('search.tuner={"type": "random", "max_trails": 3}', "unexpected keyword argument "
                                                          "'max_trails'"),
    ("search.constraints.max_latency_ms=3", "max_latency_ms and latency_table go together"),
    ("search.trial_epochs=0", "search.trial_epochs: 0 is less than the minimum of 1"),
    ("search.warmup_epochs=1", "Unknown configuration key 'search.warmup_epochs' for search "
                               "method 'tuner'"),
])
def test_bad_tuner_settings_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as err:
        pipeline.prepare(load_config(RANDOM, [*SMALL, override]))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_warm_start_needs_a_tuner_that_takes_one():
    with pytest.raises(ConfigError, match="the 'hyperband' tuner cannot start from given "
                                          "architectures; use one of"):
        pipeline.prepare(load_config(RANDOM, [*SMALL, 'search.tuner={"type": "hyperband"}',
                                              'search.warm_start={"proxy": "params"}']))


def test_tfnas_run_with_the_random_search_recipe(tmp_path):
    """What `tfnas run --config configs/grunas_random.json` runs: search, train, export."""
    config = load_config(RANDOM, [*SMALL, 'search.tuner={"type": "random", "max_trials": 2}',
                                  "train.epochs=1", 'export.formats=["tflite_int8"]'])
    run = RunDirectory(str(tmp_path / "random"))
    run.save_config(config)
    summary = pipeline.run_all(config, run, verbose=0)
    arch = Architecture.load(run.file("architecture.json"))
    assert summary["choices"] == arch.choice_list() and arch.metadata["trials"] == 2
    assert "tflite_int8" in summary["exports"] and run.stage_done("run")
