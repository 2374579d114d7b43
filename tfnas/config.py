"""Run configuration: JSON recipes with defaults, validation and dotted overrides.

A recipe (see `configs/`) is a JSON object whose keys are a subset of
`DEFAULTS`; unknown keys are an error. Sections in `OPEN_SECTIONS` are passed
to a constructor that validates them (penalties, optimizers, the search
space's own configuration): a recipe replaces them whole, while a dotted
override (`search.penalty.beta=1.0`) changes one key.
"""

import copy
import difflib
import json
import math

DEFAULTS = {
    "name": "run",
    "seed": 0,
    "data": {
        "dataset": "bundled",   # "bundled" or a tfds name ("cifar10", "cifar100", ...)
        "data_dir": None,
        "download": True,
        "val_fraction": 0.2,    # share of train for architecture updates (tfds sets only)
        "image_size": None,     # resize to this square size; None keeps the native size
        "batch_size": 200,
        "augment": True,
        "limit": None,          # use at most this many examples per split (quick runs)
    },
    "space": {"name": "grunas", "config": {}},
    "search": {
        "epochs": 100,
        "warmup_epochs": 20,
        "alternation": "epoch",  # "epoch" (GRUNAS reference) or "step" (DARTS)
        "arch_every": 1,         # "step": weight steps per architecture step (ProxylessNAS code: 5)
        "mixing": "gumbel",      # "gumbel", "gumbel_hard", "softmax", "binary", "binary_two"
        "temperature": {"initial": 5.0, "rate": "code", "minimum": 0.0},
        "penalty": {"type": "threshold", "beta": 0.8, "threshold": 10 ** 5.5},
        # what the penalty weighs: "parameters", "macs", or "latency" with "table": a
        # latency table (tfnas latency-table) of this space, and "unit": "ms" or "us"
        "cost": {"type": "parameters"},
        # stop when the argmax architecture is unchanged for `patience` epochs and the mean
        # normalized entropy is below `entropy_threshold`; patience 0 turns it off
        "convergence": {"patience": 0, "entropy_threshold": 0.5},
        "plot_blocks": None,     # blocks drawn alone in logs/architecture_blocks.png
        "optimizer": {"name": "sgd", "learning_rate": 0.08, "momentum": 0.95,
                      "weight_decay": 1e-4, "schedule": "cosine"},
        "arch_optimizer": {"name": "adam", "learning_rate": 0.01, "weight_decay": 5e-4},
    },
    "train": {
        "epochs": 200,
        "inherit": True,         # start from the supernet's weights of the chosen ops
        "optimizer": {"name": "sgd", "learning_rate": 0.08, "momentum": 0.95,
                      "weight_decay": 1e-4, "schedule": "cosine"},
    },
    "export": {"formats": ["saved_model", "tflite_float32", "tflite_float16", "tflite_dynamic",
                           "tflite_int8", "tflite_int8_qat"],
               "calibration_images": 200,
               # per-tensor int8 weights keep the GRUNAS paper network under 0.2 MB
               "int8_per_channel": False,
               # tflite_int8_qat (needs the 'qat' extra): fine-tuning with fake quantization,
               # ranges calibrated first, learning rate decaying along a cosine
               "qat_epochs": 4,
               "qat_learning_rate": 3e-4},
}

OPEN_SECTIONS = {"space.config", "search.penalty", "search.cost", "search.optimizer",
                 "search.arch_optimizer", "train.optimizer"}


MIXING_RULES = ("gumbel", "gumbel_hard", "softmax", "binary", "binary_two")


class ConfigError(ValueError):
    """A configuration key or value is not valid."""


def _check_keys(given, defaults, prefix):
    for key, value in given.items():
        path = f"{prefix}{key}"
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=1)
            hint = f" Did you mean {prefix}{close[0]!r}?" if close else ""
            raise ConfigError(f"Unknown configuration key {path!r}; valid keys here are "
                              f"{sorted(defaults)}.{hint}")
        if path in OPEN_SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{path!r} must be an object, got {value!r}.")
        elif isinstance(defaults[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{path!r} must be an object, got {value!r}.")
            _check_keys(value, defaults[key], f"{path}.")


def merge(base, update, prefix=""):
    """`base` updated with `update` (validated against `DEFAULTS`), recursively."""
    _check_keys(update, _section(prefix), prefix)
    result = copy.deepcopy(base)
    for key, value in update.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in OPEN_SECTIONS:
            result[key] = merge(result.get(key, {}), value, f"{path}.")
        else:
            result[key] = copy.deepcopy(value)
    return result


def _section(prefix):
    node = DEFAULTS
    for part in prefix.rstrip(".").split(".") if prefix else []:
        node = node[part]
    return node


def parse_override(text):
    """`"a.b.c=value"` → `(["a", "b", "c"], value)`; the value is JSON or else a string."""
    if "=" not in text:
        raise ConfigError(f"Override {text!r} must look like key.path=value.")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_override(config, text):
    path, value = parse_override(text)
    for depth in range(len(path)):
        if ".".join(path[:depth + 1]) in OPEN_SECTIONS and depth + 1 < len(path):
            section = config
            for part in path[:depth + 1]:
                section = section[part]
            nested = section
            for part in path[depth + 1:-1]:
                nested = nested.setdefault(part, {})
            nested[path[-1]] = value
            return config
    update = value
    for part in reversed(path):
        update = {part: update}
    return merge(config, update)


def load_config(path=None, overrides=()):
    """`DEFAULTS`, updated with the JSON recipe at `path`, then with `overrides`."""
    config = copy.deepcopy(DEFAULTS)
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                recipe = json.load(f)
        except OSError as err:
            raise ConfigError(f"Cannot read config {path}: {err}.") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"Config {path} is not valid JSON: {err}.") from None
        config = merge(config, recipe)
    for text in overrides:
        config = apply_override(config, text)
    validate(config)
    return config


def validate(config):
    """Checks values that the constructors do not: positive counts, known names."""
    search, data = config["search"], config["data"]
    if not isinstance(search["arch_every"], int) or search["arch_every"] < 1:
        raise ConfigError(f"search.arch_every must be a positive integer, got "
                          f"{search['arch_every']!r}.")
    for key in ("epochs", "warmup_epochs"):
        if not isinstance(search[key], int) or search[key] < 0:
            raise ConfigError(f"search.{key} must be a non-negative integer, "
                              f"got {search[key]!r}.")
    if not isinstance(config["train"]["epochs"], int) or config["train"]["epochs"] < 0:
        raise ConfigError(f"train.epochs must be a non-negative integer, got "
                          f"{config['train']['epochs']!r}.")
    if not isinstance(data["batch_size"], int) or data["batch_size"] < 1:
        raise ConfigError(f"data.batch_size must be a positive integer, got "
                          f"{data['batch_size']!r}.")
    if search["alternation"] not in ("step", "epoch"):
        raise ConfigError(f"search.alternation must be 'step' or 'epoch', got "
                          f"{search['alternation']!r}.")
    if search["mixing"] not in MIXING_RULES:
        raise ConfigError(f"search.mixing must be one of {list(MIXING_RULES)}, got "
                          f"{search['mixing']!r}.")
    patience = search["convergence"]["patience"]
    if not isinstance(patience, int) or patience < 0:
        raise ConfigError(f"search.convergence.patience must be a non-negative integer (0 "
                          f"turns the stop off), got {patience!r}.")
    threshold = search["convergence"]["entropy_threshold"]
    if not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ConfigError("search.convergence.entropy_threshold is a normalized entropy in "
                          f"(0, 1], got {threshold!r}.")
    cost = search["cost"]
    kinds = {"parameters": set(), "macs": set(), "latency": {"table"}}
    optional = {"latency": {"unit"}}
    if cost.get("type") not in kinds:
        raise ConfigError(f"search.cost.type must be one of {sorted(kinds)}, got "
                          f"{cost.get('type')!r}.")
    extra = set(cost) - {"type"} - kinds[cost["type"]] - optional.get(cost["type"], set())
    missing = kinds[cost["type"]] - set(cost)
    if extra or missing:
        raise ConfigError(f"search.cost of type {cost['type']!r} takes "
                          f"{sorted(kinds[cost['type']]) or 'no other keys'}"
                          + (f"; unknown {sorted(extra)}" if extra else "")
                          + (f"; missing {sorted(missing)}" if missing else "") + ".")
    known = {"saved_model", "tflite_float32", "tflite_float16", "tflite_dynamic", "tflite_int8",
             "tflite_int8_qat"}
    formats = set(config["export"]["formats"]) - known
    if formats:
        raise ConfigError(f"Unknown export formats {sorted(formats)}; choose from "
                          f"{sorted(known)}.")
    if not isinstance(config["export"]["qat_epochs"], int) or config["export"]["qat_epochs"] < 0:
        raise ConfigError("export.qat_epochs must be a non-negative integer.")
    if not isinstance(config["export"]["calibration_images"], int) or \
            config["export"]["calibration_images"] < 1:
        raise ConfigError("export.calibration_images must be a positive integer.")
    for key in ("learning_rate",):
        for section in ("search.optimizer", "search.arch_optimizer", "train.optimizer"):
            a, b = section.split(".")
            value = config[a][b].get(key)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{section}.{key} must be a positive number, got {value!r}.")
    return config
