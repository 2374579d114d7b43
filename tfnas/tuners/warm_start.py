"""Warm starts: any keras-tuner oracle whose first trials are architectures given in advance
(the best of many untrained ones by a zero-cost proxy, `tfnas.proxies`)."""

import functools

# `search.warm_start`'s settings left out of a config (the `tuner` method), and of a
# warm-started race over a table (`tfnas.race`): the proxy, the untrained architectures it
# scores, how many of the best the first trials train, and evolution's children ranked a
# trial by the proxy (1: not ranked).
DEFAULTS = {"proxy": "naswot", "candidates": 500, "trials": 10, "mutations": 1}


@functools.lru_cache(maxsize=None)
def warm_started(oracle_class):
    """`oracle_class` (a keras-tuner `Oracle` class) taking `initial_values=[{name: value},
    ...]`: its first trials take them in order (one already tried is skipped), then it
    proposes as `oracle_class` does. Random search trains the best-ranked first; in
    `EvolutionOracle` they are the first population, which evolution then mutates.

    The queue is not part of the oracle's state: build the oracle with the same
    `initial_values` to resume (the tried ones are in keras-tuner's state and skipped).

    Example:

    >>> import keras_tuner as kt
    >>> Oracle = warm_started(kt.oracles.RandomSearchOracle)
    >>> oracle = Oracle(objective=kt.Objective("acc", "max"), max_trials=5, seed=1,
    ...                 initial_values=[{"edge_0": 4}, {"edge_0": 3}])
    >>> oracle.__class__.__name__
    'WarmStartedRandomSearchOracle'
    """

    class WarmStarted(oracle_class):
        def __init__(self, *args, initial_values=(), **kwargs):
            super().__init__(*args, **kwargs)
            self.initial_values = [dict(values) for values in initial_values]

        def populate_space(self, trial_id):
            import keras_tuner as kt  # pylint: disable=import-outside-toplevel

            values = first_untried(self, self.initial_values)
            if values is not None:
                return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": values}
            return super().populate_space(trial_id)

    WarmStarted.__name__ = WarmStarted.__qualname__ = f"WarmStarted{oracle_class.__name__}"
    WarmStarted.__doc__ = f"`{oracle_class.__name__}` whose first trials take `initial_values`."
    return WarmStarted


def first_untried(oracle, initial_values):
    """The first of `initial_values` that `oracle` has not tried yet, completed with the
    defaults of the hyperparameters it activates; None when every one was tried."""
    for values in initial_values:
        hps = oracle.hyperparameters.copy()
        hps.values = dict(values)
        hps.ensure_active_values()
        if not oracle._duplicate(hps.values):  # pylint: disable=protected-access
            return hps.values
    return None
