"""Optimizers by name, with a learning-rate schedule: `{"name", "learning_rate", "schedule", ...}`."""

import keras

from tfnas.errors import ConfigError
from tfnas.registry import Registry

OPTIMIZERS = Registry("optimizer", key="name")
_FRACTION = {"type": "number", "minimum": 0, "maximum": 1}
_POSITIVE = {"type": ["number", "null"], "exclusiveMinimum": 0}
# Types and ranges of the Keras optimizers' arguments a config may set (the learning rate
# is checked by `check_learning_rate`; it becomes a schedule object).
ARGUMENTS = {
    "momentum": _FRACTION, "nesterov": {"type": "boolean"},
    "weight_decay": {"type": ["number", "null"], "minimum": 0},
    "beta_1": _FRACTION, "beta_2": _FRACTION, "rho": _FRACTION, "epsilon": _POSITIVE,
    "amsgrad": {"type": "boolean"}, "centered": {"type": "boolean"},
    "clipnorm": _POSITIVE, "clipvalue": _POSITIVE, "global_clipnorm": _POSITIVE,
    "use_ema": {"type": "boolean"}, "ema_momentum": _FRACTION,
    "ema_overwrite_frequency": {"type": ["integer", "null"], "minimum": 1},
    "loss_scale_factor": _POSITIVE,
    "gradient_accumulation_steps": {"type": ["integer", "null"], "minimum": 1},
}


class _DecayWithOneLearningRate:
    """Keras's decoupled weight decay, with the learning rate computed once per step.

    Keras's TensorFlow optimizers read `self.learning_rate` for every variable they decay,
    and a schedule's value is a dozen ops: with a cosine schedule that was half of the
    quickstart supernet's traced weight step (7,161 of 13,156 ops), and tracing is most
    of a short search's time. The same ops on the same values, so the same numbers."""

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None:
            return
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        def decay(variable, learning_rate):
            if self._use_weight_decay(variable):
                lr = tf.cast(learning_rate, variable.dtype)
                wd = tf.cast(self.weight_decay, variable.dtype)
                variable.assign_sub(variable * wd * lr)

        def decay_all(distribution, variables, learning_rate):
            for variable in variables:
                if isinstance(variable, keras.Variable):
                    variable = variable.value  # the tf.Variable
                distribution.extended.update(variable, decay, args=(learning_rate,),
                                             group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(
            decay_all, self._distribution_strategy, variables, self.learning_rate)


class _FusedMomentum:
    """SGD with momentum as TensorFlow's one fused kernel per variable
    (`ResourceApplyKerasMomentum`: `m = momentum * m - lr * g; v += m`, Keras's own update,
    bit for bit) instead of seven ops; Nesterov momentum and other backends take Keras's
    path."""

    def update_step(self, gradient, variable, learning_rate):
        if self.momentum == 0 or self.nesterov or keras.backend.backend() != "tensorflow":
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        momentum = self.momentums[self._get_variable_index(variable)]
        dtype = variable.dtype
        return tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle, accum=momentum.value.handle,
            lr=tf.cast(learning_rate, dtype), grad=tf.cast(gradient, dtype),
            momentum=tf.cast(self.momentum, dtype), use_locking=False, use_nesterov=False)


def _tfnas_optimizer(cls, *mixins):
    """`cls` (a Keras optimizer) with `_DecayWithOneLearningRate` and `mixins`,
    serializable as `tfnas>{name}`."""
    subclass = type(cls.__name__, (_DecayWithOneLearningRate, *mixins, cls),
                    {"__doc__": f"`keras.optimizers.{cls.__name__}` in fewer traced ops, "
                                "the same numbers.", "__module__": __name__})
    return keras.saving.register_keras_serializable(package="tfnas")(subclass)


SGD = _tfnas_optimizer(keras.optimizers.SGD, _FusedMomentum)
Adam, AdamW, RMSprop = (_tfnas_optimizer(cls) for cls in (
    keras.optimizers.Adam, keras.optimizers.AdamW, keras.optimizers.RMSprop))
for _name, _cls in (("sgd", SGD), ("adam", Adam), ("adamw", AdamW), ("rmsprop", RMSprop)):
    OPTIMIZERS.register(_name, arguments=ARGUMENTS)(_cls)

SCHEDULES = ("constant", "cosine", "cosine_restarts")
RESTART_KEYS = {"cycles": 6, "t_mul": 2.0, "alpha": 0.0}


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

    `schedule` is `"constant"`, `"cosine"` (decaying to 0 over `total_steps`) or
    `"cosine_restarts"` (SGDR, Loshchilov & Hutter, as ENAS trains: `cycles` cosine cycles
    that fill `total_steps`, each `t_mul` times longer than the one before, decaying to
    `alpha` times the learning rate; defaults 6, 2 and 0).

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
    restarts = {k: config.pop(k) for k in RESTART_KEYS if k in config}
    if restarts and schedule != "cosine_restarts":
        raise ConfigError(f"{sorted(restarts)} belong to the \"cosine_restarts\" schedule, "
                          f"not {schedule!r}.")
    if "learning_rate" not in config:
        raise ConfigError(f"The optimizer {config['name']!r} needs a learning_rate.")
    OPTIMIZERS.check(config)
    if schedule == "cosine":
        config["learning_rate"] = keras.optimizers.schedules.CosineDecay(
            config["learning_rate"], decay_steps=max(1, total_steps))
    if schedule == "cosine_restarts":
        restarts = {**RESTART_KEYS, **restarts}
        cycles, t_mul = restarts["cycles"], restarts["t_mul"]
        if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 1 or \
                isinstance(t_mul, bool) or not isinstance(t_mul, (int, float)) or t_mul < 1:
            raise ConfigError(f"cosine_restarts: cycles must be a positive integer and t_mul "
                              f">= 1, got {cycles!r} and {t_mul!r}.")
        first = total_steps / sum(t_mul ** k for k in range(cycles))
        config["learning_rate"] = keras.optimizers.schedules.CosineDecayRestarts(
            config["learning_rate"], first_decay_steps=max(1, round(first)), t_mul=t_mul,
            alpha=restarts["alpha"])
    return OPTIMIZERS.get(config)
