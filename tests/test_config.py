import glob
import json
import os
import re

import pytest

from tfnas.config import DEFAULTS, ConfigError, apply_override, load_config
from tfnas.errors import TfnasError
from tfnas.methods import method_class
from tfnas.optimizers import make_optimizer

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "configs", "*.json")))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_recipes_load(path):
    config = load_config(path)
    from tfnas.spaces import get_space  # pylint: disable=import-outside-toplevel

    space = get_space(config["space"]["name"], config["space"]["config"])  # validates it
    assert space.blocks()


def test_paper_recipes_carry_the_reference_settings():
    c10 = load_config(os.path.join(os.path.dirname(CONFIGS[0]), "grunas_cifar10.json"))
    assert c10["data"]["batch_size"] == 200 and c10["data"]["val_fraction"] == 0.2
    assert c10["search"]["epochs"] == 100 and c10["search"]["warmup_epochs"] == 20
    assert c10["search"]["penalty"] == {"type": "threshold", "beta": 0.8,
                                        "threshold": pytest.approx(10 ** 5.5)}
    assert c10["space"]["config"]["candidates"] == [1, 2, 3, 4, 6]
    c100 = load_config(os.path.join(os.path.dirname(CONFIGS[0]), "grunas_cifar100.json"))
    assert c100["data"]["dataset"] == "cifar100"
    assert c100["space"]["config"]["num_classes"] == 100


def test_dca_paper_recipes_carry_the_reference_settings():
    root = os.path.dirname(CONFIGS[0])
    search = load_config(os.path.join(root, "darts_dca_cifar10_search.json"))
    s = search["search"]
    assert (search["data"]["batch_size"], s["epochs"]) == (512, 50)
    assert s["optimizer"]["learning_rate"] == 0.2 and s["optimizer"]["weight_decay"] == 3e-4
    assert (s["arch_optimizer"]["learning_rate"], s["arch_optimizer"]["beta_1"],
            s["arch_optimizer"]["weight_decay"]) == (6e-4, 0.5, 1e-3)
    assert search["space"]["config"]["evaluation"] == {"filters": 36, "cells": 20}
    assert s["penalty"]["budget"] == 3_500_000
    train = load_config(os.path.join(root, "darts_dca_cifar10_train.json"))
    t = train["train"]
    assert (train["data"]["batch_size"], t["epochs"], t["drop_path"]) == (96, 600, 0.2)
    assert t["optimizer"]["learning_rate"] == 0.025 and t["optimizer"]["global_clipnorm"] == 5
    assert train["space"] == search["space"]  # the searched architecture's space


def test_unknown_keys_are_rejected_with_a_suggestion(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"search": {"epocs": 3}}))
    with pytest.raises(ConfigError, match="Unknown configuration key 'search.epocs'.*'epochs'"):
        load_config(str(path))
    with pytest.raises(ConfigError, match="Unknown configuration key 'dat'"):
        load_config(None, ["dat.batch_size=3"])


def test_overrides_parse_json_values_and_reach_open_sections():
    config = load_config(None, ["search.epochs=3", "search.warmup_epochs=1",
                                "data.dataset=cifar100",
                                "search.penalty.beta=2.5",
                                'search.penalty={"type": "product", "beta": 1.0}',
                                "space.config.candidates=[1,2]"])
    assert config["search"]["epochs"] == 3
    assert config["data"]["dataset"] == "cifar100"
    assert config["search"]["penalty"] == {"type": "product", "beta": 1.0}
    assert config["space"]["config"] == {"candidates": [1, 2]}
    assert method_class("differentiable").defaults["epochs"] == 100  # defaults not mutated
    assert apply_override(load_config(), "search.penalty.beta=2")["search"]["penalty"][
        "beta"] == 2


@pytest.mark.parametrize("override,message", [
    ("search.epochs=-1", "search.epochs: -1 is less than the minimum of 1"),
    ("data.batch_size=0", "data.batch_size: 0 is less than the minimum of 1"),
    ("search.alternation=batch", "search.alternation: 'batch' is not one of ['epoch', 'step']"),
    ("search.optimizer.learning_rate=0", "positive number"),
    ("export.formats=[\"onnx\"]", "export.formats: 'onnx' is not one of"),
    ("export.calibration_images=0", "calibration_images"),
    ("search.epochs", "key.path=value"),
])
def test_bad_values_are_rejected(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


# Each of these gave a traceback or passed silently before they were validated.
@pytest.mark.parametrize("override,message", [
    ("seed=abc", "seed: 'abc' is not of type 'integer'"),
    ("seed=1.5", "seed: 1.5 is not of type 'integer'"),
    ("data.limit=abc", "data.limit: 'abc' is not of type 'integer', 'null'"),
    ("data.limit=-5", "data.limit: -5 is less than the minimum of 1; a positive count, or "
                      "null for no limit"),
    ("data.limit=0", "null for no limit"),
    ("data.val_fraction=1.5", "data.val_fraction: 1.5 is greater than or equal to the "
                              "maximum of 1"),
    ("data.val_fraction=0", "data.val_fraction: 0 is less than or equal to the minimum of 0"),
    ("data.augment=yes", "data.augment: 'yes' is not of type 'boolean'"),
    ("search.epochs=true", "search.epochs: True is not of type 'integer'"),
    ("search.warmup_epochs=100", "search.warmup_epochs (100) must be less than search.epochs"),
    ("search.temperature.initial=1", "The temperature belongs to the mixing rule now"),
    ("search.method=evolution", "search.method: Unknown search method 'evolution'; choose "
                                "one of ['compaction', 'differentiable'"),
    ("search.epoch=3", "Did you mean 'search.epochs'?"),
    ("export.formats=tflite_int8", "export.formats: 'tflite_int8' is not of type 'array'; a "
                                   "JSON list"),
    ("name=../../x", "name: '../../x' does not match"),
    ("name=/tmp/x", "not a path; pass --run_dir"),
    ("search.plot_blocks=unit_1", "search.plot_blocks: 'unit_1' is not of type 'array', 'null'"),
    ("train.inherit=1", "train.inherit: 1 is not of type 'boolean'"),
    ("deterministic=maybe", "deterministic: 'maybe' is not of type 'boolean'"),
    ("search.rematerialize=1", "search.rematerialize: 1 is not of type 'boolean'"),
    ("distribute.rejoin=-1", "distribute.rejoin: -1 is less than the minimum of 0"),
])
def test_every_bad_value_is_a_one_line_config_error(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


# Arguments handed to a library are held to a schema too (keras-tuner reads max_trials 0
# as "no limit" and ran forever).
@pytest.mark.parametrize("overrides, message", [
    (["search.method=tuner", 'search.tuner={"type": "random", "max_trials": 0}'],
     "search.tuner: max_trials: 0 is less than the minimum of 1"),
    (["search.method=tuner", 'search.tuner={"type": "random", "max_trials": -3}'],
     "search.tuner: max_trials: -3 is less than the minimum of 1"),
    (["search.method=tuner", 'search.tuner={"type": "random", "max_trials": "ten"}'],
     "search.tuner: max_trials: 'ten' is not of type 'integer'"),
    (["search.method=tuner", 'search.tuner={"type": "hyperband", "factor": 1}'],
     "search.tuner: factor: 1 is less than the minimum of 2"),
    (["search.method=tuner", 'search.tuner={"type": "enas", "samples_per_update": 0}'],
     "search.tuner: samples_per_update: 0 is less than the minimum of 1"),
    (["search.method=enas", 'search.controller={"learning_rate": "fast"}'],
     "search.controller.learning_rate: 'fast' is not of type 'number'"),
    (["search.method=enas", 'search.controller={"baseline_decay": 1}'],
     "search.controller.baseline_decay: 1 is greater than or equal to the maximum of 1"),
])
def test_library_arguments_are_checked_when_the_config_loads(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("optimizer, message", [
    ({"name": "sgd", "learning_rate": 0.1, "momentum": 2}, "momentum: 2 is greater than"),
    ({"name": "sgd", "learning_rate": 0.1, "nesterov": 3}, "nesterov: 3 is not of type"),
    ({"name": "adam", "learning_rate": 0.1, "beta_1": "high"}, "beta_1: 'high' is not of"),
])
def test_optimizer_arguments_are_checked(optimizer, message):
    with pytest.raises(ConfigError, match=message):
        make_optimizer(optimizer, 10)


def test_a_config_nested_thousands_deep_is_a_config_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"data": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ConfigError, match="nests its values too deeply"):
        load_config(str(path))
    with pytest.raises(ConfigError, match="nests its value too deeply"):
        load_config(None, ["search.x=" + "[" * 100_000 + "]" * 100_000])


def test_a_config_that_is_not_an_object_is_a_config_error(tmp_path):
    for text, kind in (("[1, 2]", "list"), ('"x"', "str"), ("3", "int")):
        path = tmp_path / "c.json"
        path.write_text(text)
        with pytest.raises(ConfigError, match=f"must be a JSON object.*got a JSON {kind}"):
            load_config(str(path))
    path = tmp_path / "binary.json"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(str(path))


@pytest.mark.parametrize("penalty,message", [
    ({"type": "threshold", "beta": "abc"}, "takes finite numbers; got {'beta': 'abc'}"),
    ({"type": "threshold", "gamma": 1}, "Bad arguments for the penalty 'threshold'"),
    ({"type": "lagrange"}, "Unknown penalty 'lagrange'; choose one of ['add_linear'"),
    ({"type": "product", "reference": -1}, "reference must be positive"),
])
def test_bad_penalties_are_config_errors(penalty, message):
    from tfnas import penalties  # pylint: disable=import-outside-toplevel

    with pytest.raises(ConfigError) as err:
        penalties.get(penalty)
    assert message in str(err.value)


def test_bad_config_files(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(str(path))
    with pytest.raises(ConfigError, match="Cannot read config"):
        load_config(str(tmp_path / "missing.json"))


def test_optimizer_factory_errors_name_the_problem():
    assert make_optimizer({"name": "sgd", "learning_rate": 0.1, "momentum": 0.9}, 10)
    with pytest.raises(ValueError, match="Unknown optimizer 'lamb'"):
        make_optimizer({"name": "lamb", "learning_rate": 0.1}, 10)
    with pytest.raises(ValueError, match="Bad arguments for the optimizer 'sgd'"):
        make_optimizer({"name": "sgd", "learning_rate": 0.1, "betas": 0.9}, 10)
    with pytest.raises(ConfigError, match="belong to the \"cosine_restarts\" schedule"):
        make_optimizer({"name": "sgd", "learning_rate": 0.1, "cycles": 3}, 10)
    with pytest.raises(ConfigError, match="cycles must be a positive integer"):
        make_optimizer({"name": "sgd", "learning_rate": 0.1, "schedule": "cosine_restarts",
                        "cycles": 0}, 10)


def test_sgdr_fills_the_steps_with_cycles_each_twice_as_long():
    # ENAS/ShuffleNASNets: six cycles of 10, 20, ..., 320 epochs make 630 epochs.
    sgdr = make_optimizer({"name": "sgd", "learning_rate": 0.05, "schedule": "cosine_restarts",
                           "cycles": 6, "t_mul": 2, "alpha": 0.01}, 630)
    schedule = sgdr._learning_rate  # pylint: disable=protected-access
    rate = [float(schedule(step)) for step in range(630)]
    restarts = [step for step in range(1, 630) if rate[step] > rate[step - 1]]
    assert restarts == [10, 30, 70, 150, 310]
    assert rate[0] == pytest.approx(0.05, rel=1e-6) and min(rate) == pytest.approx(0.0005, rel=0.01)


@pytest.mark.parametrize("override, message", [
    ("search.convergence.patience=-1", "patience: -1 is less than the minimum of 0"),
    ("search.convergence.entropy_threshold=2", "entropy_threshold: 2 is greater than the "
                                               "maximum of 1"),
    ("search.cost=3", "search.cost: 3 is not of type 'string', 'object'"),
])
def test_search_convergence_is_validated(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)


@pytest.mark.parametrize("override, message", [
    ('search.cost={"type": "latency"}', "search.cost: Bad arguments for the cost 'latency'"),
    ('search.cost={"type": "latency", "table": "missing.json"}',
     "Cannot read latency table missing.json"),
    ('search.cost={"type": "macs", "table": "t.json"}', "Bad arguments for the cost 'macs': "
                                                        "got an unexpected keyword argument "
                                                        "'table'"),
    ('search.cost={"type": "flops"}', "search.cost: Unknown cost 'flops'; choose one of "
                                      "['latency', 'macs', 'memory', 'parameters']"),
    ("search.mixing=binary_three", "search.mixing: Unknown mixing rule 'binary_three'; "
                                   "choose one of"),
    ('search.mixing={"type": "gumbel", "temperature": {"initial": 0}}',
     "search.mixing: temperature.initial must be a positive number"),
    ('search.mixing={"type": "gumbel", "temperature": {"rate": "fast"}}',
     "temperature.rate must be 'code'"),
    ('search.mixing={"type": "gumbel", "temperature": {"initial": 1, "minimum": 2}}',
     "temperature.minimum must be at least 0 and below temperature.initial (1)"),
    ('search.mixing={"type": "binary", "temperature": 1}', "unexpected keyword argument"),
    ('search.penalty={"type": "product", "reference": -1}', "search.penalty: Bad arguments"),
    ('search.arch_optimizer={"name": "lamb", "learning_rate": 0.1}',
     "search.arch_optimizer: Unknown optimizer 'lamb'"),
])
def test_the_method_checks_what_its_section_builds_before_a_run(override, message):
    from tfnas import pipeline  # pylint: disable=import-outside-toplevel

    config = load_config(None, [override, "data.limit=64"])
    with pytest.raises(TfnasError) as err:
        pipeline.prepare(config)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
