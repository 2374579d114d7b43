"""Mixing rules: how a mixed operation turns architecture logits into an output.

A rule is a small Keras layer shared by every `MixedOp` of a supernet, so the
schedule values it owns (the Gumbel temperature) are one `keras.Variable` that
a callback updates without retracing the train step. `mixing_weights(logits)` gives
the mixing weights; `combine(...)` runs the candidates and mixes them, and
returns the weights that a cost model should use. A rule that runs only some
candidates (binary gates) overrides `combine`.
"""

import contextlib
import functools
import math
import threading

import keras
import tensorflow as tf
from keras import ops
from tensorflow.python.eager import record
from tensorflow.python.ops import cond_v2

from tfnas.errors import ConfigError
from tfnas.registry import Registry

RULES = Registry("mixing rule")

# Per-epoch multipliers of the Gumbel temperature.
TEMPERATURE_RATES = {"code": math.exp(-0.045), "paper": math.exp(-0.645)}

# Per thread (tf.distribute runs a replica's step in its own): whether an
# architecture step is being traced.
_TRACING = threading.local()


def add_gumbel_noise(logits, seed_generator):
    """`logits + G`, G ~ Gumbel(0, 1); its argmax is a sample of softmax(logits)."""
    uniform = keras.random.uniform(ops.shape(logits), minval=1e-10, maxval=1.0,
                                   seed=seed_generator)
    return logits - ops.log(-ops.log(uniform))


def run_candidate(index, candidates, inputs, training=None, reproducible=False):
    """`candidates[index](inputs)`, running only that candidate, so one traced step serves
    every path: a graph `Case`, as `keras.ops.switch` builds.

    By default TensorFlow lowers the `Case` to Switch/Merge ops, as for `keras.ops.switch`.
    `reproducible=True` keeps it one function call instead, which is slower (1.2x to 1.6x
    an ENAS child step, `benchmarks/enas_step.py`). Both forms give bit-identical steps
    from run to run with `tfnas.determinism` (a tfnas run's default); without it the
    lowered form's backward pass differed in the last bits, the function call's did not,
    which is what `reproducible` was for.

    Example:

    >>> layers = [keras.layers.Dense(2, kernel_initializer="zeros"), keras.layers.Identity()]
    >>> out = run_candidate(1, layers, keras.ops.ones((1, 2)))
    >>> keras.ops.convert_to_numpy(out).tolist()
    [[1.0, 1.0]]
    """
    branches = [functools.partial(c, inputs, training=training) for c in candidates]
    # tf.switch_case has no switch for the lowering; cond_v2.indexed_case, which it calls, has.
    if not tf.inside_function():
        return branches[int(index)]()
    return cond_v2.indexed_case(ops.cast(index, "int32"), branches,
                                lower_using_switch_merge=not reproducible)


def rematerialized(f, variable_gradients=lambda: True):
    """`f` with gradient checkpointing: the backward pass recomputes `f`'s activations
    instead of keeping them from the forward pass (as `tf.recompute_grad`, with less
    graph). The recomputation runs in a `keras.StatelessScope`, so batch-norm
    statistics (any variable `f` assigns) are updated once per step, not twice.
    `f`'s randomness must come in through its arguments: a draw inside it would
    differ when recomputed.

    `variable_gradients()`, asked when the gradient is traced, says whether the
    variables `f` reads need gradients; when it says no (an architecture step,
    whose variables come in as arguments), only the arguments' are traced, where
    `tf.recompute_grad` traces every variable's gradient (pruned at run time, but
    part of the traced step all the same).

    Example:

    >>> layer = keras.layers.Dense(2)
    >>> y = rematerialized(layer)(keras.ops.ones((1, 3)))
    >>> tuple(y.shape)
    (1, 2)
    """

    @tf.custom_gradient
    def run(*args):
        with record.stop_recording():
            result = f(*args)

        def grad(*upstream, variables=None):
            variables = list(variables or ())
            # A data dependency on the upstream gradient, so that the recomputation
            # waits for it (XLA drops control dependencies); NaN-safe as
            # tf.recompute_grad's.
            first = ops.cast(ops.max(ops.reshape(upstream[0], [-1])[:1]), "bool")
            dependency = ops.where(ops.equal(first, first), 0.0, float("nan"))
            inputs = tf.nest.map_structure(lambda a: a + ops.cast(dependency, a.dtype), args)
            sources = tf.nest.flatten(inputs)
            wanted = variables if variable_gradients() else []
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(sources)
                tape.watch(wanted)
                with keras.StatelessScope():
                    recomputed = f(*inputs)
            grads = tape.gradient(recomputed, sources + wanted, output_gradients=list(upstream))
            return grads[:len(sources)], grads[len(sources):] + [None] * (
                len(variables) - len(wanted))

        return result, grad

    return run


class MixingRule(keras.layers.Layer):
    """Base class. Subclasses implement `mixing_weights(logits, training)`."""

    def mixing_weights(self, logits, training=None):
        raise NotImplementedError

    def probabilities(self, logits):
        """The categorical distribution the logits stand for."""
        return ops.softmax(logits)

    # True for rules whose weight steps run only some candidates (see `executed`).
    partial_execution = False
    # Whether the architecture logits learn from the loss. A rule whose path is chosen from
    # outside (ENAS's controller picks it) does not: `SearchModel` then traces no
    # architecture step, which would have no gradient.
    learns_architecture = True

    def build_state(self, op):
        """Variables the rule keeps per mixed op (created in `op.build`); default none."""
        return None

    def executed(self, state, num_candidates):
        """Which candidates ran in the last weight step (bool vector), for rules that run
        only some (`partial_execution`). Default: the one whose index the rule's state
        keeps in `state["executed"]`."""
        return ops.equal(ops.arange(num_candidates, dtype="int32"), state["executed"])

    @contextlib.contextmanager
    def architecture_step(self):
        """Context entered while the architecture step is traced (see `BinaryGateMixing`).
        That step differentiates the architecture only, which reaches the candidates
        as their mixing weights: rematerialized candidates trace no weight gradients."""
        previous = getattr(_TRACING, "architecture_step", False)
        _TRACING.architecture_step = True
        try:
            yield
        finally:
            _TRACING.architecture_step = previous

    def after_update(self, logits, old_logits, state=None):
        """Called after each architecture update with the logits before it; default nothing."""
        del logits, old_logits, state  # AutoGraph cannot convert a docstring-only body

    def combine(self, logits, candidates, inputs, training=None, state=None,
                rematerialize=False):
        """Returns `(sum_i w_i * candidate_i(inputs), w)`. With `rematerialize`, the
        candidates' activations are recomputed in the backward pass instead of kept
        (`rematerialized`); rules that run only some candidates ignore it."""
        w = self.mixing_weights(logits, training=training)

        # A candidate that always outputs zeros (`none`) adds nothing to the sum, nor
        # to its gradient: left out, it leaves out its share of the traced graph.
        terms = [i for i, c in enumerate(candidates) if not getattr(c, "always_zero", False)]
        terms = terms or [0]

        def weighted_sum(x, w):
            # One unstack, not a slice per candidate: a slice and its gradient are
            # ten graph nodes, and a supernet has thousands of candidates.
            w = ops.unstack(w, num=len(candidates))
            outputs = None
            for i in terms:
                term = w[i] * candidates[i](x, training=training)
                outputs = term if outputs is None else outputs + term
            return outputs

        if rematerialize:
            weighted_sum = rematerialized(weighted_sum, variable_gradients=lambda: not getattr(
                _TRACING, "architecture_step", False))
        return weighted_sum(inputs, w), w

    def call(self, logits, training=None):
        return self.mixing_weights(logits, training=training)

    def schedule_callbacks(self, start_epoch=0):
        """Callbacks that drive the rule's schedule values (the Gumbel temperature) during
        a search whose architecture updates start at `start_epoch`; default none."""
        del start_epoch
        return []

    def logged_values(self):
        """`{name: variable}` that a search logs every step (the temperature); default none."""
        return {}


@keras.saving.register_keras_serializable(package="tfnas")
class SoftmaxMixing(MixingRule):
    """DARTS: w = softmax(logits), deterministic.

    Example:

    >>> keras.ops.convert_to_numpy(SoftmaxMixing()(keras.ops.zeros((4,)))).tolist()
    [0.25, 0.25, 0.25, 0.25]
    """

    def mixing_weights(self, logits, training=None):
        return ops.softmax(logits)


@keras.saving.register_keras_serializable(package="tfnas")
class ArgmaxMixing(MixingRule):
    """Runs only the most probable candidate of the logits, in training too; its weights
    are the one-hot of that candidate, without a gradient.

    DCA-NAS's derived cells: one cell of a kind carries the architecture (its ops mix
    with softmax), the others copy its argmax (`MixedOp(logits_from=...)` with this
    rule), so they run one op per edge instead of all of them. Candidates that did not
    run keep their weights (`partial_execution`).

    Args:
        exclude: indices of candidates never chosen (DARTS derives no edge as "none").

    Example:

    >>> rule = ArgmaxMixing(exclude=[1])
    >>> keras.ops.convert_to_numpy(rule(keras.ops.array([0.1, 2.0, 0.3]))).tolist()
    [0.0, 0.0, 1.0]
    """

    partial_execution = True
    learns_architecture = False

    def __init__(self, exclude=(), **kwargs):
        super().__init__(**kwargs)
        self.exclude = [int(i) for i in exclude]

    def build_state(self, op):
        return {"executed": op.add_weight(name="argmax_path", shape=(), dtype="int32",
                                          initializer="zeros", trainable=False)}

    def chosen(self, logits):
        """The index of the most probable candidate that is not excluded."""
        n = ops.shape(logits)[0]
        allowed = ops.logical_not(ops.any(ops.equal(
            ops.expand_dims(ops.arange(n, dtype="int32"), 1),
            ops.convert_to_tensor([self.exclude or [-1]], dtype="int32")), axis=1))
        scores = ops.where(allowed, ops.stop_gradient(logits), float("-inf"))
        return ops.cast(ops.argmax(scores), "int32")

    def mixing_weights(self, logits, training=None):
        return ops.one_hot(self.chosen(logits), ops.shape(logits)[0])

    def combine(self, logits, candidates, inputs, training=None, state=None):
        index = self.chosen(logits)
        state["executed"].assign(index)
        return (run_candidate(index, candidates, inputs, training),
                ops.one_hot(index, len(candidates)))

    def get_config(self):
        return {**super().get_config(), "exclude": self.exclude}


@keras.saving.register_keras_serializable(package="tfnas")
class GumbelSoftmaxMixing(MixingRule):
    """Gumbel-softmax with temperature `T`: w = softmax((logits + G) / T).

    `hard=False` is the relaxed sample of SNAS and GRUNAS; `hard=True` is the
    straight-through estimator of GDAS: the forward pass uses the one-hot of the
    sample, the backward pass the gradient of the soft sample. One fresh sample
    is drawn per call in training; in inference the noise is left out
    (softmax(logits / T), or its one-hot when hard).

    `temperature` is the initial temperature, or its schedule
    `{"initial": 5.0, "rate": "code", "minimum": 0.0}` (see `TemperatureAnnealing`,
    which `schedule_callbacks` returns). The current value is a non-trainable
    variable that the callback assigns, so the train step is traced once.

    Example:

    >>> rule = GumbelSoftmaxMixing(temperature=5.0, seed=0)
    >>> w = rule(keras.ops.zeros((5,)), training=True)
    >>> round(float(keras.ops.sum(w)), 5)
    1.0
    """

    def __init__(self, temperature=5.0, hard=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.hard = bool(hard)
        self.seed = seed
        self.schedule = temperature_schedule(temperature)
        self.initial_temperature = self.schedule["initial"]
        self.temperature = self.add_weight(
            shape=(), name="temperature", trainable=False,
            initializer=keras.initializers.Constant(self.initial_temperature))
        self.seed_generator = keras.random.SeedGenerator(seed)

    def mixing_weights(self, logits, training=None):
        if training:
            logits = add_gumbel_noise(logits, self.seed_generator)
        soft = ops.softmax(logits / self.temperature)
        if not self.hard:
            return soft
        one_hot = ops.one_hot(ops.argmax(soft), ops.shape(soft)[0], dtype=soft.dtype)
        return soft + ops.stop_gradient(one_hot - soft)

    def schedule_callbacks(self, start_epoch=0):
        return [TemperatureAnnealing(**self.schedule, start_epoch=start_epoch, rules=[self])]

    def logged_values(self):
        return {"temperature": self.temperature}

    def get_config(self):
        return {**super().get_config(), "temperature": self.schedule, "hard": self.hard,
                "seed": self.seed}


def temperature_schedule(temperature):
    """`{"initial", "rate", "minimum"}` from a number or a partial schedule, checked."""
    if isinstance(temperature, bool):
        raise ConfigError(f"temperature must be a number or a schedule, got {temperature!r}.")
    if isinstance(temperature, (int, float)):
        temperature = {"initial": temperature}
    if not isinstance(temperature, dict):
        raise ConfigError("temperature must be a number or an object {initial, rate, minimum}, "
                          f"got {temperature!r}.")
    unknown = sorted(set(temperature) - {"initial", "rate", "minimum"})
    if unknown:
        raise ConfigError(f"Unknown temperature keys {unknown}; a schedule takes initial, rate "
                          "and minimum.")
    schedule = {"initial": 5.0, "rate": "code", "minimum": 0.0, **temperature}
    initial, rate, minimum = schedule["initial"], schedule["rate"], schedule["minimum"]
    if isinstance(initial, bool) or not isinstance(initial, (int, float)) or \
            not math.isfinite(initial) or initial <= 0:
        raise ConfigError(f"temperature.initial must be a positive number (the Gumbel "
                          f"temperature divides the logits; GRUNAS: 5.0), got {initial!r}.")
    if not (rate in TEMPERATURE_RATES or (
            isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0 < rate <= 1)):
        raise ConfigError(f"temperature.rate must be 'code' (exp(-0.045) per epoch), 'paper' "
                          f"(exp(-0.645)) or a number in (0, 1], got {rate!r}.")
    if isinstance(minimum, bool) or not isinstance(minimum, (int, float)) or \
            not 0 <= minimum < initial:
        raise ConfigError(f"temperature.minimum must be at least 0 and below temperature."
                          f"initial ({initial}), got {minimum!r}.")
    return {"initial": float(initial), "rate": rate if isinstance(rate, str) else float(rate),
            "minimum": float(minimum)}


class TemperatureAnnealing(keras.callbacks.Callback):
    """Sets the Gumbel temperature to `initial * rate ** max(0, epoch - start_epoch)`.

    `rate` is a number or `"code"` (exp(-0.045) per epoch, the GRUNAS reference
    code, the default) or `"paper"` (exp(-0.645), as the paper states). The
    reference keeps T fixed during the weight-only warm-up: pass
    `start_epoch=warmup_epochs`. The value depends only on the epoch, so a
    resumed run continues the schedule. It sets the `temperature` of `rules`
    (default: the model's `mixing_rules` that have one).

    Example:

    >>> cb = TemperatureAnnealing(initial=5.0, rate="paper")
    >>> round(cb.value(2), 4)
    1.3764
    """

    def __init__(self, initial=5.0, rate="code", start_epoch=0, minimum=0.0, rules=None):
        super().__init__()
        if isinstance(rate, str):
            if rate not in TEMPERATURE_RATES:
                raise ValueError(f"Unknown temperature rate {rate!r}; use a number or one of "
                                 f"{sorted(TEMPERATURE_RATES)}.")
            rate = TEMPERATURE_RATES[rate]
        self.initial, self.rate = float(initial), float(rate)
        self.start_epoch, self.minimum = int(start_epoch), float(minimum)
        self.rules = rules

    def value(self, epoch):
        return max(self.minimum, self.initial * self.rate ** max(0, epoch - self.start_epoch))

    def on_epoch_begin(self, epoch, logs=None):
        rules = self.rules or [r for r in getattr(self.model, "mixing_rules", [])
                               if hasattr(r, "temperature")]
        if not rules:
            raise ValueError("TemperatureAnnealing: the model has no rule with a temperature.")
        for rule in rules:
            rule.temperature.assign(self.value(epoch))


@RULES.register("softmax")
def _softmax(seed=None):
    del seed  # deterministic
    return SoftmaxMixing(name="mixing")


@RULES.register("argmax")
def _argmax(exclude=(), seed=None):
    del seed  # deterministic
    return ArgmaxMixing(exclude=exclude, name="mixing")


@RULES.register("gumbel")
def _gumbel(temperature=5.0, seed=None):
    return GumbelSoftmaxMixing(temperature, hard=False, seed=seed, name="mixing")


@RULES.register("gumbel_hard")
def _gumbel_hard(temperature=5.0, seed=None):
    return GumbelSoftmaxMixing(temperature, hard=True, seed=seed, name="mixing")


def get(identifier, seed=None):
    """Builds a rule from a name or `{"type": name, **arguments}`: `softmax` (DARTS),
    `gumbel` (GRUNAS, SNAS) and `gumbel_hard` (GDAS) with a `temperature` schedule,
    `binary` and `binary_two` (ProxylessNAS binary gates, one or two paths).

    `seed` seeds the sampling rules. A `MixingRule` is returned as it is.

    Example:

    >>> get({"type": "gumbel", "temperature": {"initial": 2.0, "rate": "paper"}}).schedule
    {'initial': 2.0, 'rate': 'paper', 'minimum': 0.0}
    """
    if isinstance(identifier, MixingRule):
        return identifier
    import tfnas.layers.binary_gate  # noqa: F401  pylint: disable=import-outside-toplevel
    return RULES.get(identifier, seed=seed)
