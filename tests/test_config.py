import glob
import json
import os

import pytest

from tfnas.config import DEFAULTS, ConfigError, apply_override, load_config
from tfnas.pipeline import make_optimizer

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


def test_unknown_keys_are_rejected_with_a_suggestion(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"search": {"epocs": 3}}))
    with pytest.raises(ConfigError, match="Unknown configuration key 'search.epocs'.*'epochs'"):
        load_config(str(path))
    with pytest.raises(ConfigError, match="Unknown configuration key 'dat'"):
        load_config(None, ["dat.batch_size=3"])


def test_overrides_parse_json_values_and_reach_open_sections():
    config = load_config(None, ["search.epochs=3", "data.dataset=cifar100",
                                "search.penalty.beta=2.5",
                                'search.penalty={"type": "product", "beta": 1.0}',
                                "space.config.candidates=[1,2]"])
    assert config["search"]["epochs"] == 3
    assert config["data"]["dataset"] == "cifar100"
    assert config["search"]["penalty"] == {"type": "product", "beta": 1.0}
    assert config["space"]["config"] == {"candidates": [1, 2]}
    assert DEFAULTS["search"]["epochs"] == 100  # defaults are not mutated
    assert apply_override(load_config(), "search.penalty.beta=2")["search"]["penalty"][
        "beta"] == 2


@pytest.mark.parametrize("override,message", [
    ("search.epochs=-1", "non-negative integer"),
    ("data.batch_size=0", "positive integer"),
    ("search.alternation=batch", "'step' or 'epoch'"),
    ("search.optimizer.learning_rate=0", "positive number"),
    ("export.formats=[\"onnx\"]", "Unknown export formats"),
    ("export.calibration_images=0", "calibration_images"),
    ("search.epochs", "key.path=value"),
])
def test_bad_values_are_rejected(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


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
    with pytest.raises(ValueError, match="Bad arguments for optimizer 'sgd'"):
        make_optimizer({"name": "sgd", "learning_rate": 0.1, "betas": 0.9}, 10)


@pytest.mark.parametrize("override, message", [
    ('search.cost={"type": "latency"}', "missing ['table']"),
    ('search.cost={"type": "macs", "table": "t.json"}', "unknown ['table']"),
    ('search.cost={"type": "flops"}', "search.cost.type must be one of"),
    ("search.mixing=binary_three", "search.mixing must be one of"),
    ("search.convergence.patience=-1", "patience must be a non-negative integer"),
    ("search.convergence.entropy_threshold=2", "normalized entropy in (0, 1]"),
])
def test_search_cost_mixing_and_convergence_are_validated(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)
