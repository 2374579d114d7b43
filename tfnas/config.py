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

from tfnas.errors import TfnasError

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


class ConfigError(TfnasError, ValueError):
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
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"Config {path} is not valid JSON: {err}.") from None
        if not isinstance(recipe, dict):
            raise ConfigError(f"Config {path} must be a JSON object of sections (name, seed, "
                              f"data, space, search, train, export), got a JSON "
                              f"{type(recipe).__name__}.")
        config = merge(config, recipe)
    for text in overrides:
        config = apply_override(config, text)
    validate(config)
    return config


def _integer(minimum=None, nullable=False):
    spec = {"type": ["integer", "null"] if nullable else "integer"}
    if minimum is not None:
        spec["minimum"] = minimum
    return spec


def _number(exclusive_minimum=None, maximum=None, exclusive_maximum=None):
    spec = {"type": "number"}
    for key, value in (("exclusiveMinimum", exclusive_minimum), ("maximum", maximum),
                       ("exclusiveMaximum", exclusive_maximum)):
        if value is not None:
            spec[key] = value
    return spec


def _object(properties):
    return {"type": "object", "properties": properties}


_BOOLEAN = {"type": "boolean"}
_OPEN = {"type": "object"}
EXPORT_FORMATS = ["saved_model", "tflite_float32", "tflite_float16", "tflite_dynamic",
                  "tflite_int8", "tflite_int8_qat"]

# Types, ranges and choices of every closed key (unknown keys are caught by `merge`).
SCHEMA = _object({
    "name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]*$"},
    "seed": _integer(0),
    "data": _object({
        "dataset": {"type": "string", "minLength": 1},
        "data_dir": {"type": ["string", "null"]},
        "download": _BOOLEAN,
        "val_fraction": _number(exclusive_minimum=0, exclusive_maximum=1),
        "image_size": _integer(8, nullable=True),
        "batch_size": _integer(1),
        "augment": _BOOLEAN,
        "limit": _integer(1, nullable=True),
    }),
    "space": _object({"name": {"type": "string"}, "config": _OPEN}),
    "search": _object({
        "epochs": _integer(1),
        "warmup_epochs": _integer(0),
        "alternation": {"enum": ["epoch", "step"]},
        "arch_every": _integer(1),
        "mixing": {"enum": list(MIXING_RULES)},
        "temperature": _object({
            "initial": _number(exclusive_minimum=0),
            "rate": {"anyOf": [{"enum": ["code", "paper"]},
                               _number(exclusive_minimum=0, maximum=1)]},
            "minimum": {"type": "number", "minimum": 0},
        }),
        "penalty": _OPEN,
        "cost": _OPEN,
        "convergence": _object({"patience": _integer(0),
                                "entropy_threshold": _number(exclusive_minimum=0, maximum=1)}),
        "plot_blocks": {"type": ["array", "null"], "items": {"type": "string"}},
        "optimizer": _OPEN,
        "arch_optimizer": _OPEN,
    }),
    "train": _object({"epochs": _integer(0), "inherit": _BOOLEAN, "optimizer": _OPEN}),
    "export": _object({
        "formats": {"type": "array", "items": {"enum": EXPORT_FORMATS}, "uniqueItems": True},
        "calibration_images": _integer(1),
        "int8_per_channel": _BOOLEAN,
        "qat_epochs": _integer(0),
        "qat_learning_rate": _number(exclusive_minimum=0),
    }),
})

# What to do about a value that breaks the schema, where the schema's words are not enough.
HINTS = {
    "name": "the run's name is a plain name (letters, digits, '.', '_', '-'), not a path; "
            "pass --run_dir to write elsewhere",
    "data.limit": "a positive count, or null for no limit",
    "data.val_fraction": "the share of the training split kept for architecture steps, "
                         "strictly between 0 and 1",
    "search.epochs": "a search needs at least one epoch",
    "search.temperature.initial": "the Gumbel temperature divides the logits: use a "
                                  "positive number (GRUNAS: 5.0)",
    "search.temperature.rate": "'code' (exp(-0.045) per epoch), 'paper' (exp(-0.645)) or a "
                               "number in (0, 1]",
    "export.formats": f"a JSON list, e.g. [\"tflite_int8\"], of {EXPORT_FORMATS}",
}


def _dotted(path):
    return ".".join(str(p) for p in path) or "<config>"


def validate(config):
    """Checks every closed key against `SCHEMA` and the keys that depend on each other.

    Raises `ConfigError` naming the first bad key, its value and what it takes.
    Open sections (penalty, optimizers, cost, the space's config) are checked
    by the objects they configure (`tfnas.pipeline.prepare`).
    """
    import jsonschema  # pylint: disable=import-outside-toplevel

    if not isinstance(config, dict):
        raise ConfigError(f"A config is a JSON object of sections, got {type(config).__name__}.")
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(config),
                    key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        err = errors[0]
        path = list(err.absolute_path)
        # An error inside a list item belongs to the list (export.formats[0]).
        key = _dotted(path[:-1] if path and isinstance(path[-1], int) else path)
        hint = HINTS.get(key)
        message = err.message
        if err.validator == "enum":
            message = f"{err.instance!r} is not one of {err.validator_value}"
        raise ConfigError(f"{key}: {message}" + (f"; {hint}." if hint else "."))
    search, data = config["search"], config["data"]
    if search["warmup_epochs"] >= search["epochs"]:
        raise ConfigError(
            f"search.warmup_epochs ({search['warmup_epochs']}) must be less than search.epochs "
            f"({search['epochs']}): otherwise no architecture step ever runs.")
    t = search["temperature"]
    if search["mixing"].startswith("gumbel") and t["minimum"] >= t["initial"]:
        raise ConfigError(f"search.temperature.minimum ({t['minimum']}) must be below "
                          f"search.temperature.initial ({t['initial']}).")
    if data["dataset"] == "bundled" and data["data_dir"] is not None:
        raise ConfigError("data.data_dir is for tfds datasets; the bundled set ships with "
                          "tfnas. Remove data.data_dir or name a tfds dataset.")
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
    for section in ("search.optimizer", "search.arch_optimizer", "train.optimizer"):
        a, b = section.split(".")
        value = config[a][b].get("learning_rate")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{section}.learning_rate must be a positive number, got "
                              f"{value!r}.")
    return config
