"""Optimizers by name, with a learning-rate schedule: `{"name", "learning_rate", "schedule", ...}`."""

import keras

from tfnas.errors import ConfigError
from tfnas.registry import Registry

OPTIMIZERS = Registry("optimizer", key="name")
for _name, _cls in (("sgd", keras.optimizers.SGD), ("adam", keras.optimizers.Adam),
                    ("adamw", keras.optimizers.AdamW), ("rmsprop", keras.optimizers.RMSprop)):
    OPTIMIZERS.register(_name)(_cls)

SCHEDULES = ("constant", "cosine")


def check_learning_rate(section, optimizer):
    """`optimizer["learning_rate"]` is a positive finite number; else a ConfigError naming
    `section` (e.g. "search.optimizer")."""
    import math  # pylint: disable=import-outside-toplevel

    value = optimizer.get("learning_rate")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{section}.learning_rate must be a positive number, got {value!r}.")


def make_optimizer(config, total_steps):
    """A Keras optimizer from `{"name", "learning_rate", "schedule", **arguments}`.

    `schedule` is `"constant"` or `"cosine"` (decaying to 0 over `total_steps`).

    Example:

    >>> opt = make_optimizer({"name": "sgd", "learning_rate": 0.1, "momentum": 0.9}, 100)
    >>> type(opt).__name__
    'SGD'
    """
    config = {"name": "sgd", **config}
    schedule = config.pop("schedule", "constant")
    if schedule not in SCHEDULES:
        raise ConfigError(f"Unknown learning-rate schedule {schedule!r}; use one of "
                          f"{list(SCHEDULES)}.")
    if "learning_rate" not in config:
        raise ConfigError(f"The optimizer {config['name']!r} needs a learning_rate.")
    if schedule == "cosine":
        config["learning_rate"] = keras.optimizers.schedules.CosineDecay(
            config["learning_rate"], decay_steps=max(1, total_steps))
    return OPTIMIZERS.get(config)
