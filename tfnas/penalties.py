"""Penalties: how the search loss combines cross-entropy with an expected cost.

A penalty is called as `penalty(cross_entropy, cost)` inside the traced train
step and returns the loss. Penalties with state (a Lagrange multiplier) keep it
in `keras.Variable`s and update it in `update(cost)`, which `SearchModel` calls
after every architecture step.
"""

import math

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


def get(config):
    """Builds a penalty from `{"type": ..., **arguments}`, a name, or returns a `Penalty`.

    The official ProxylessNAS names `mul#log` and `add#linear` are aliases.
    """
    if isinstance(config, Penalty):
        return config
    if config is None:
        return Penalty()
    if isinstance(config, dict):
        bad = {k: v for k, v in config.items() if k != "type" and (
            isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v))}
        if bad:
            raise ConfigError(f"The {config.get('type')!r} penalty takes finite numbers; got "
                              f"{bad}.")
    return PENALTIES.get(config)
