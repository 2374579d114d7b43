"""The decisions of a keras-tuner search space: hyperparameters with finitely many values."""

from keras_tuner.engine import hyperparameters as hp_types

# The most choices one decision may have (an hp.Int over a huge range is not a decision).
MAX_CHOICES = 10_000


def choices_of(hp, oracle="The oracle"):
    """The finite list of values of a hyperparameter an oracle decides, or None for
    `Fixed`. `Choice`, `Boolean`, `Int` and stepped `Float` are decisions; anything else
    is a ValueError naming `oracle` and the fix.

    Example:

    >>> import keras_tuner as kt
    >>> hp = kt.HyperParameters()
    >>> _ = hp.Int("units", 8, 32, step=8)
    >>> choices_of(hp.space[0])
    [8, 16, 24, 32]
    """
    if isinstance(hp, hp_types.Fixed):
        return None
    if isinstance(hp, hp_types.Choice):
        return list(hp.values)
    if isinstance(hp, hp_types.Boolean):
        return [False, True]
    if isinstance(hp, (hp_types.Int, hp_types.Float)):
        if isinstance(hp, hp_types.Float) and hp.step is None:
            raise ValueError(
                f"{oracle} chooses among finite values; hp.Float {hp.name!r} has no step. "
                "Give it a step or use hp.Choice.")
        count = hp._get_n_values()  # pylint: disable=protected-access
        if count > MAX_CHOICES:
            raise ValueError(f"hp.Int {hp.name!r} has {count:,} values, more than the "
                             f"{MAX_CHOICES:,} one decision may have; give it a larger step.")
        values = list(hp.values)
        return [int(round(v)) for v in values] if isinstance(hp, hp_types.Int) else values
    raise ValueError(f"{oracle} cannot decide hyperparameter {hp.name!r} of type "
                     f"{type(hp).__name__}; use hp.Choice, hp.Int, hp.Boolean or hp.Fixed.")
