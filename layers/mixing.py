"""Mixing rules: how a mixed operation turns architecture logits into an output.

A rule is a small Keras layer shared by every `MixedOp` of a supernet, so the
schedule values it owns (the Gumbel temperature) are one `keras.Variable` that
a callback updates without retracing the train step. `mixing_weights(logits)` gives
the mixing weights; `combine(...)` runs the candidates and mixes them, and
returns the weights that a cost model should use. A rule that runs only some
candidates (binary gates) overrides `combine`.
"""

import contextlib

import keras
from keras import ops


def add_gumbel_noise(logits, seed_generator):
    """`logits + G`, G ~ Gumbel(0, 1); its argmax is a sample of softmax(logits)."""
    uniform = keras.random.uniform(ops.shape(logits), minval=1e-10, maxval=1.0,
                                   seed=seed_generator)
    return logits - ops.log(-ops.log(uniform))


class MixingRule(keras.layers.Layer):
    """Base class. Subclasses implement `mixing_weights(logits, training)`."""

    def mixing_weights(self, logits, training=None):
        raise NotImplementedError

    def probabilities(self, logits):
        """The categorical distribution the logits stand for."""
        return ops.softmax(logits)

    # True for rules whose weight steps run only some candidates (see `executed`).
    partial_execution = False

    def build_state(self, op):
        """Variables the rule keeps per mixed op (created in `op.build`); default none."""
        return None

    def executed(self, state, num_candidates):
        """Which candidates ran in the last weight step (bool vector); rules that run
        only some set `partial_execution` and implement this."""
        raise NotImplementedError

    def architecture_step(self):
        """Context entered while the architecture step is traced (see `BinaryGateMixing`)."""
        return contextlib.nullcontext()

    def after_update(self, logits, old_logits, state=None):
        """Called after each architecture update with the logits before it; default nothing."""
        del logits, old_logits, state  # AutoGraph cannot convert a docstring-only body

    def combine(self, logits, candidates, inputs, training=None, state=None):
        """Returns `(sum_i w_i * candidate_i(inputs), w)`."""
        w = self.mixing_weights(logits, training=training)
        outputs = None
        for i, candidate in enumerate(candidates):
            term = w[i] * candidate(inputs, training=training)
            outputs = term if outputs is None else outputs + term
        return outputs, w

    def call(self, logits, training=None):
        return self.mixing_weights(logits, training=training)


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
class GumbelSoftmaxMixing(MixingRule):
    """Gumbel-softmax with temperature `T`: w = softmax((logits + G) / T).

    `hard=False` is the relaxed sample of SNAS and GRUNAS; `hard=True` is the
    straight-through estimator of GDAS: the forward pass uses the one-hot of the
    sample, the backward pass the gradient of the soft sample. One fresh sample
    is drawn per call in training; in inference the noise is left out
    (softmax(logits / T), or its one-hot when hard).

    `temperature` is a non-trainable variable; `TemperatureAnnealing` sets it.

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
        self.initial_temperature = float(temperature)
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

    def get_config(self):
        return {**super().get_config(), "temperature": self.initial_temperature,
                "hard": self.hard, "seed": self.seed}


def get(identifier, temperature=5.0, seed=None):
    """Builds a rule from a name: `softmax` (DARTS), `gumbel` (GRUNAS, SNAS), `gumbel_hard`
    (GDAS), `binary` and `binary_two` (ProxylessNAS binary gates, one or two paths).

    `temperature` applies to the Gumbel rules only; `seed` to the sampling rules.
    """
    from tfnas.layers.binary_gate import BinaryGateMixing  # pylint: disable=import-outside-toplevel

    if isinstance(identifier, MixingRule):
        return identifier
    rules = {
        "softmax": lambda: SoftmaxMixing(name="mixing"),
        "gumbel": lambda: GumbelSoftmaxMixing(temperature, hard=False, seed=seed, name="mixing"),
        "gumbel_hard": lambda: GumbelSoftmaxMixing(temperature, hard=True, seed=seed,
                                                   name="mixing"),
        "binary": lambda: BinaryGateMixing(paths=1, seed=seed, name="mixing"),
        "binary_two": lambda: BinaryGateMixing(paths=2, seed=seed, name="mixing"),
    }
    if identifier not in rules:
        raise ValueError(f"Unknown mixing rule {identifier!r}; choose one of {sorted(rules)}.")
    return rules[identifier]()
