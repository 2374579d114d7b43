"""Run configuration: JSON recipes with defaults, validation and dotted overrides.

A recipe (see `configs/`) is a JSON object whose keys are a subset of
`DEFAULTS`; unknown keys are an error. Sections in `OPEN_SECTIONS` are checked
by what they configure: the search method's own schema (`search`), the space's
configuration, the optimizer. A recipe replaces them whole, while a dotted
override (`search.penalty.beta=1.0`) changes one key.
"""

import copy
import difflib
import json

from tfnas import schema
from tfnas.errors import ConfigError  # noqa: F401  (raised by every config check)

DEFAULTS = {
    "name": "run",
    "seed": 0,
    # Same seed, bit-identical run: traced steps leave out Grappler's memory optimizer,
    # whose reordered gradient sums differ run to run (tfnas.determinism). false:
    # TensorFlow's default.
    "deterministic": True,
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
    "space": {"name": None, "config": {}},   # None: tfnas.spaces.DEFAULT_SPACE
    # the search method's section: "method" names it, the method's own keys and defaults
    # fill the rest (see tfnas.methods; `tfnas.methods.method_class(name).defaults`)
    "search": {},
    "train": {
        "epochs": 200,
        "inherit": True,         # start from what the search learned (the method's `inherit`)
        "optimizer": {"name": "sgd", "learning_rate": 0.08, "momentum": 0.95,
                      "weight_decay": 1e-4, "schedule": "cosine"},
        # DARTS's evaluation-network regularizers, where the space has them
        # (SearchSpace.training_model): the largest drop-path probability, reached
        # linearly over training, and the auxiliary head's loss weight; 0 turns them off
        "drop_path": 0.0,
        "auxiliary_weight": 0.0,
        # Cutout's square side in pixels on the retraining batches (DARTS: 16); 0: off.
        # Needs data.augment.
        "cutout": 0,
    },
    # tf.distribute (tfnas.distribute): "strategy" null (one device), "mirrored" (the
    # devices of this machine, or "devices") or "multi_worker" (the machines of TF_CONFIG);
    # data.batch_size is the global batch, split across the replicas. "logical_cpus"
    # splits this CPU into that many devices (tests, benchmarks). "rejoin": how many times
    # a `tfnas` process of a multi-worker run that loses a peer restarts itself to wait for
    # it and resume (0: it exits with TensorFlow's error, for cluster managers that restart
    # every process).
    "distribute": {"strategy": None, "devices": None, "logical_cpus": None, "rejoin": 3},
    "export": {"formats": ["saved_model", "tflite_float32", "tflite_float16", "tflite_dynamic",
                           "tflite_int8", "tflite_int8_qat"],
               "calibration_images": 200,
               # per-tensor int8 weights keep the GRUNAS paper network under 0.2 MB
               "int8_per_channel": False,
               # tflite_int8_qat: fine-tuning with fake quantization, ranges calibrated first,
               # learning rate decaying along a cosine; "native" (Keras 3, every space) or
               # "tfmot" (tf_keras twin, GRUNAS only, needs the 'qat' extra)
               "qat_backend": "native",
               "qat_epochs": 4,
               "qat_learning_rate": 3e-4},
}

OPEN_SECTIONS = {"space.config", "search", "train.optimizer"}


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
    except RecursionError:
        raise ConfigError(f"Override {key.strip()}=... nests its value too deeply to be a "
                          "config value.") from None
    return key.strip().split("."), value


def apply_override(config, text):
    path, value = parse_override(text)
    if path == ["search", "method"]:
        # Another method has other keys: its section starts from its own defaults.
        from tfnas.methods import fill_section  # pylint: disable=import-outside-toplevel

        return {**config, "search": fill_section({"method": value})}
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
        except RecursionError:
            raise ConfigError(f"Config {path} nests its values too deeply to be a tfnas "
                              "recipe (a recipe is a few levels of sections).") from None
        if not isinstance(recipe, dict):
            raise ConfigError(f"Config {path} must be a JSON object of sections (name, seed, "
                              f"data, space, search, train, export), got a JSON "
                              f"{type(recipe).__name__}.")
        config = merge(config, recipe)
    from tfnas.methods import fill_section  # pylint: disable=import-outside-toplevel

    # Defaults first, so that an override changes one key of them (search.penalty.beta=1).
    config["search"] = fill_section(config["search"])
    for text in overrides:
        config = apply_override(config, text)
    validate(config)
    return config


def input_paths(config):
    """Every file or folder that `config` names and that exists: the paths a command may
    read (`search.baseline_weights`, `space.config.path`, latency tables, `data.data_dir`,
    ...), whatever key names them, so that `--overwrite` never deletes one."""
    import os  # pylint: disable=import-outside-toplevel

    if isinstance(config, dict):
        return [p for value in config.values() for p in input_paths(value)]
    if isinstance(config, list):
        return [p for value in config for p in input_paths(value)]
    if isinstance(config, str) and config and os.path.exists(config):
        return [config]
    return []


_integer, _number, _object = schema.integer, schema.number, schema.obj
_BOOLEAN, _OPEN = schema.BOOLEAN, schema.OPEN
EXPORT_FORMATS = ["saved_model", "tflite_float32", "tflite_float16", "tflite_dynamic",
                  "tflite_int8", "tflite_int8_qat"]

# Types, ranges and choices of every closed key (unknown keys are caught by `merge`).
SCHEMA = _object({
    "name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]*$"},
    "seed": _integer(0),
    "deterministic": _BOOLEAN,
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
    "space": _object({"name": {"type": ["string", "null"]}, "config": _OPEN}),
    "search": _OPEN,
    "train": _object({"epochs": _integer(0), "inherit": _BOOLEAN, "optimizer": _OPEN,
                      "drop_path": _number(minimum=0, exclusive_maximum=1),
                      "auxiliary_weight": _number(minimum=0), "cutout": _integer(0)}),
    "distribute": _object({
        "strategy": {"enum": [None, "mirrored", "multi_worker"]},
        "devices": {"type": ["array", "null"], "items": {"type": "string"}, "minItems": 1},
        "logical_cpus": _integer(1, nullable=True),
        "rejoin": _integer(0),
    }),
    "export": _object({
        "formats": {"type": "array", "items": {"enum": EXPORT_FORMATS}, "uniqueItems": True},
        "calibration_images": _integer(1),
        "int8_per_channel": _BOOLEAN,
        "qat_backend": {"enum": ["native", "tfmot"]},
        "qat_epochs": _integer(0),
        "qat_learning_rate": _number(exclusive_minimum=0),
    }),
})

# What to do about a value that breaks the schema, where the schema's words are not enough.
HINTS = {
    "name": "the run's name is a plain name (letters, digits, '.', '_', '-'), not a path; "
            "pass --run_dir to write elsewhere",
    "data.limit": "a positive count, or null for no limit",
    "distribute.devices": "a JSON list of device names, e.g. [\"/gpu:0\", \"/gpu:1\"]",
    "data.val_fraction": "the share of the training split kept for architecture steps, "
                         "strictly between 0 and 1",
    "export.formats": f"a JSON list, e.g. [\"tflite_int8\"], of {EXPORT_FORMATS}",
}


def _dotted(path):
    return ".".join(str(p) for p in path) or "<config>"


def validate(config):
    """Checks every closed key against `SCHEMA` and the keys that depend on each other.

    Raises `ConfigError` naming the first bad key, its value and what it takes.
    The `search` section is completed with its method's defaults and checked
    against the method's schema. Other open sections (optimizers, the space's
    config, what the method builds) are checked by the objects they configure
    (`tfnas.pipeline.prepare`).
    """
    if not isinstance(config, dict):
        raise ConfigError(f"A config is a JSON object of sections, got {type(config).__name__}.")
    error = schema.first_error(SCHEMA, config)
    if error:
        key = _dotted(error[0])
        hint = HINTS.get(key)
        raise ConfigError(f"{key}: {error[1]}" + (f"; {hint}." if hint else "."))
    data = config["data"]
    if data["dataset"] == "bundled" and data["data_dir"] is not None:
        raise ConfigError("data.data_dir is for tfds datasets; the bundled set ships with "
                          "tfnas. Remove data.data_dir or name a tfds dataset.")
    from tfnas.methods import fill_section  # pylint: disable=import-outside-toplevel
    from tfnas.optimizers import check_learning_rate  # pylint: disable=import-outside-toplevel

    check_learning_rate("train.optimizer", config["train"]["optimizer"])
    from tfnas.spaces import DEFAULT_SPACE  # pylint: disable=import-outside-toplevel

    config["search"] = fill_section(config["search"])
    if config["space"]["name"] is None:
        config["space"] = {**config["space"], "name": DEFAULT_SPACE}
    return config
