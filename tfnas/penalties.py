"""Penalties: how the search loss combines cross-entropy with an expected cost.

A penalty is called as `penalty(cross_entropy, cost)` inside the traced train
step and returns the loss. Penalties with state (a Lagrange multiplier) keep it
in `keras.Variable`s and update it in `update(cost)`, which `SearchModel` calls
after every architecture step.
"""

import math

import keras
from keras import ops

from tfnas.errors import ConfigError
from tfnas.registry import Registry

PENALTIES = Registry("penalty")


@PENALTIES.register("none")
class Penalty:
    """No penalty: the loss is the cross-entropy."""

    name = "none"

    def __call__(self, cross_entropy, cost):
        return cross_entropy

    def update(self, cost):
        """Called after each architecture step; stateless penalties do nothing."""
        del cost  # AutoGraph cannot convert a body that is only a docstring

    @property
    def variables(self):
        """The penalty's state (`keras.Variable`s), which a search saves and resumes."""
        return []

    def logged_values(self):
        """`{name: variable}` that a search logs every step; default none."""
        return {}

    # Whether `check_cost` checks anything: a search then builds its cost model (and a
    # supernet, where the cost is counted on one) before it writes anything, to check it.
    checks_cost = False

    def check_cost(self, cost, smallest, largest):
        """Raises `ConfigError` if the penalty cannot work with `cost`, whose cheapest
        derivable architecture costs `smallest` and dearest `largest` (a budget no network
        of the space meets, or one that every network meets); default nothing to check."""
        del cost, smallest, largest

    def callbacks(self, measure):
        """Keras callbacks the penalty needs during a search; `measure()` returns the
        expected cost and the cost of the architecture derived now. Default none."""
        del measure
        return []

    def derivation_limits(self):
        """`(low, high)` the derived architecture's cost must lie within (the space's
        `derive` then takes the most probable such architecture), or None (default)."""
        return None

    def get_config(self):
        return {"type": self.name}


@PENALTIES.register("product")
class ProductPenalty(Penalty):
    """GRUNAS paper, eq. (3): loss = CE * (P / reference) ** beta.

    The paper writes CE * P**beta (`reference=1`); with P in the hundreds of
    thousands that multiplies the loss by ~10**4 at beta = 0.8, so a reference
    (for example the smallest network of the space) keeps the scale of the loss
    near the cross-entropy's. The gradient reaches the architecture through P.

    Example:

    >>> float(ProductPenalty(beta=1.0, reference=2.0)(3.0, 4.0))
    6.0
    """

    name = "product"

    def __init__(self, beta=0.8, reference=1.0):
        self.beta = float(beta)
        self.reference = float(reference)
        if self.reference <= 0:
            raise ValueError(f"reference must be positive, got {reference}.")

    def __call__(self, cross_entropy, cost):
        return cross_entropy * ops.power(cost / self.reference, self.beta)

    def get_config(self):
        return {"type": self.name, "beta": self.beta, "reference": self.reference}


@PENALTIES.register("threshold")
class ThresholdProductPenalty(Penalty):
    """GRUNAS reference code: loss = CE * (max(P, P0) / P0) ** beta.

    No penalty, and no gradient from the cost, while P < P0 (default 10**5.5).

    Example:

    >>> float(ThresholdProductPenalty(beta=1.0, threshold=10.0)(2.0, 5.0))
    2.0
    """

    name = "threshold"

    def __init__(self, beta=0.8, threshold=10 ** 5.5):
        self.beta = float(beta)
        self.threshold = float(threshold)
        if self.threshold <= 0:
            raise ValueError(f"threshold must be positive, got {threshold}.")

    def __call__(self, cross_entropy, cost):
        ratio = ops.maximum(cost, self.threshold) / self.threshold
        return cross_entropy * ops.power(ratio, self.beta)

    def get_config(self):
        return {"type": self.name, "beta": self.beta, "threshold": self.threshold}


@PENALTIES.register("mul_log", aliases=["mul#log"])
class LogProductPenalty(Penalty):
    """ProxylessNAS "mul#log": loss = alpha * CE * (log E[cost] / log reference) ** beta.

    Defaults alpha = 0.2, beta = 0.3 (the official code). The cost and the
    reference must be above 1 in the cost's unit (pick ms, us or MACs
    accordingly); the cost is clipped at 1 + 1e-6 so the logarithm stays
    positive.

    Example:

    >>> round(float(LogProductPenalty(alpha=1.0, beta=1.0, reference=10.0)(2.0, 100.0)), 4)
    4.0
    """

    name = "mul_log"

    def __init__(self, reference, alpha=0.2, beta=0.3):
        self.reference = float(reference)
        self.alpha = float(alpha)
        self.beta = float(beta)
        if self.reference <= 1:
            raise ValueError(f"mul_log needs a reference above 1 (its logarithm divides), got "
                             f"{reference}; express the cost in a smaller unit (us, MACs).")

    def __call__(self, cross_entropy, cost):
        log_ratio = ops.log(ops.maximum(cost, 1.0 + 1e-6)) / math.log(self.reference)
        return self.alpha * cross_entropy * ops.power(log_ratio, self.beta)

    def get_config(self):
        return {"type": self.name, "reference": self.reference, "alpha": self.alpha,
                "beta": self.beta}


@PENALTIES.register("add_linear", aliases=["add#linear"])
class LinearAddPenalty(Penalty):
    """ProxylessNAS "add#linear": loss = CE + lam * (E[cost] - reference) / reference.

    Default lam = 0.1 (the official code).

    Example:

    >>> round(float(LinearAddPenalty(reference=10.0, lam=0.1)(2.0, 15.0)), 4)
    2.05
    """

    name = "add_linear"

    def __init__(self, reference, lam=0.1):
        self.reference = float(reference)
        self.lam = float(lam)
        if self.reference <= 0:
            raise ValueError(f"reference must be positive, got {reference}.")

    def __call__(self, cross_entropy, cost):
        return cross_entropy + self.lam * (cost - self.reference) / self.reference

    def get_config(self):
        return {"type": self.name, "reference": self.reference, "lam": self.lam}


@PENALTIES.register("lagrangian")
class LagrangianPenalty(Penalty):
    """DCA-NAS (Dutta et al., *Search-time Efficient Device Constraints-Aware Neural
    Architecture Search*, eq. 4): loss = CE + lambda * (cost - bound) / budget.

    The multiplier lambda >= 0 lives in a `keras.Variable` (traced once, logged
    as `lagrange_multiplier`, saved and resumed with the search) and ascends on
    the constraint after every architecture step: lambda <- max(0, lambda +
    rate * (cost - bound) / budget). It grows while the expected cost is over
    the bound and falls to 0 once it is under. The paper gives no update rule;
    projected gradient ascent is the standard one. Dividing by the budget keeps
    `rate` independent of the cost's unit; `normalize=False` gives the paper's
    raw lambda * (cost - bound).

    The bound K' (a variable, `constraint_bound`, moved without a retrace):
    `"budget"` is the paper's K' = K; a number is a fixed K' (the lookup graph,
    `tfnas budget-graph`, searches over a grid of them); `"derived"` closes the
    gap between the expected cost under softmax(alpha) and the cost of the
    derived discrete network during the search: every `track_every` batches,
    K' moves halfway to K minus that gap (`BoundTracker`). With `tolerance`,
    the search derives the most probable architecture whose cost lies within
    [K (1 - tolerance), K] (`derivation_limits`); the tracked bound then aims
    at the middle of that interval.

    Example:

    >>> penalty = LagrangianPenalty(budget=100.0, rate=1.0)
    >>> penalty.update(150.0)
    >>> float(penalty.multiplier), float(penalty(2.0, 150.0))
    (0.5, 2.25)
    """

    name = "lagrangian"
    BOUNDS = ("budget", "derived")
    checks_cost = True

    def __init__(self, budget, rate=0.1, initial=0.0, normalize=True, bound="budget",
                 tolerance=None, track_every=10):
        self.budget, self.rate = float(budget), float(rate)
        self.initial, self.normalize = float(initial), bool(normalize)
        if self.budget <= 0:
            raise ValueError(f"budget must be positive (in the cost's unit), got {budget}.")
        if self.rate <= 0 or self.initial < 0:
            raise ValueError(f"rate must be positive and initial at least 0, got rate={rate}, "
                             f"initial={initial}.")
        if not (bound in self.BOUNDS or (isinstance(bound, (int, float)) and bound > 0)):
            raise ValueError(f"bound is 'budget' (K' = K), 'derived' (K' tracks the derived "
                             f"network) or a positive number (a fixed K'), got {bound!r}.")
        if tolerance is not None and not 0 < tolerance < 1:
            raise ValueError(f"tolerance is a fraction of the budget in (0, 1), got "
                             f"{tolerance}.")
        if int(track_every) != track_every or track_every < 1:
            raise ValueError(f"track_every is a positive number of batches, got "
                             f"{track_every}.")
        self.bound_rule, self.tolerance, self.track_every = bound, tolerance, int(track_every)
        self.minimum = 0.0  # the smallest network's cost, once check_cost has seen it
        start = float(bound) if isinstance(bound, (int, float)) else self.target
        self.multiplier = keras.Variable(self.initial, dtype="float32", trainable=False,
                                         name="lagrange_multiplier")
        self.bound = keras.Variable(start, dtype="float32", trainable=False,
                                    name="constraint_bound")

    @property
    def target(self):
        """The cost the derived network aims at: K, or the middle of the tolerated range."""
        return self.budget * (1 - self.tolerance / 2 if self.tolerance else 1)

    def violation(self, cost):
        """How far `cost` is over the bound (negative: under it), over the budget."""
        excess = ops.cast(cost, "float32") - self.bound
        return excess / self.budget if self.normalize else excess

    def __call__(self, cross_entropy, cost):
        return cross_entropy + self.multiplier * self.violation(cost)

    def update(self, cost):
        self.multiplier.assign(ops.maximum(
            0.0, self.multiplier + self.rate * ops.stop_gradient(self.violation(cost))))

    @property
    def variables(self):
        return [self.multiplier, self.bound]

    def logged_values(self):
        return {"lagrange_multiplier": self.multiplier, "constraint_bound": self.bound}

    def check_cost(self, cost, smallest, largest):
        self.minimum = smallest
        if self.budget < smallest:
            raise ConfigError(f"budget {self.budget:g} is below the smallest network of the "
                              f"space, {smallest:g} {cost.unit}; raise the budget to at least "
                              "that.")
        if self.budget >= largest:
            raise ConfigError(f"budget {self.budget:g} is at or above the largest network of "
                              f"the space, {largest:g} {cost.unit}: it can never bind, and the "
                              "search would run unconstrained. Lower the budget below that, "
                              "or search without a penalty.")

    def callbacks(self, measure):
        if self.bound_rule != "derived":
            return []
        return [BoundTracker(self.bound, self.target, measure, every=self.track_every,
                             minimum=self.minimum)]

    def derivation_limits(self):
        if self.tolerance is None:
            return None
        return self.budget * (1 - self.tolerance), self.budget

    def get_config(self):
        return {"type": self.name, "budget": self.budget, "rate": self.rate,
                "initial": self.initial, "normalize": self.normalize, "bound": self.bound_rule,
                "tolerance": self.tolerance, "track_every": self.track_every}


class BoundTracker(keras.callbacks.Callback):
    """Moves a constraint's bound K' so that the derived network meets a target.

    The expected cost under softmax(alpha) is what the multiplier constrains,
    the derived discrete network is what the user gets; their gap shifts as
    the distribution sharpens. Every `every` batches and at the end of every
    epoch, K' moves halfway to `target - (derived - expected)` (never below
    `minimum`, the smallest network), so that a multiplier holding the
    expected cost at K' holds the derived cost at the target. Epoch logs get
    `derived_cost`.
    """

    def __init__(self, bound, target, measure, every=10, minimum=0.0):
        super().__init__()
        self.bound, self.target, self.measure = bound, float(target), measure
        self.every, self.minimum = int(every), float(minimum)
        self.derived = None

    def _move(self):
        expected, self.derived = self.measure()
        aim = max(self.minimum, self.target - (self.derived - expected))
        self.bound.assign(0.5 * (float(self.bound.numpy()) + aim))

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % self.every == 0:
            self._move()

    def on_epoch_end(self, epoch, logs=None):
        self._move()
        if logs is not None:
            logs["derived_cost"] = self.derived


def get(config):
    """Builds a penalty from `{"type": ..., **arguments}`, a name, or returns a `Penalty`.

    The official ProxylessNAS names `mul#log` and `add#linear` are aliases.
    """
    if isinstance(config, Penalty):
        return config
    if config is None:
        return Penalty()
    if isinstance(config, dict):
        import inspect  # pylint: disable=import-outside-toplevel

        name, _ = PENALTIES.split(config)
        defaults = {k: p.default for k, p in
                    inspect.signature(PENALTIES.resolve(name)).parameters.items()}
        bad = {k: v for k, v in config.items()
               if k != "type" and not _acceptable(v, defaults.get(k))}
        if bad:
            raise ConfigError(f"The {config.get('type')!r} penalty takes finite numbers; got "
                              f"{bad} (switches take true or false; a setting whose default "
                              "is a name or null also takes a name or null).")
    return PENALTIES.get(config)


def _acceptable(value, default):
    """Whether a config value has the kind of its argument's default: a switch, a finite
    number, or (where the default is a name or None) also a name or None."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    return (default is None or isinstance(default, str)) and (value is None
                                                              or isinstance(value, str))
