"""Regularized (aging) evolution as a keras-tuner Oracle."""

import math

import keras_tuner as kt
import numpy as np

from tfnas.tuners.decisions import choices_of as _choices_of
from tfnas.tuners.resumable import ResumableOracle

# Types and ranges of the settings a config passes to `EvolutionOracle` (the tuner
# method's `{"type": "evolution", ...}`), checked before a run starts.
SETTINGS_SCHEMA = {
    "population_size": {"type": "integer", "minimum": 2},
    "sample_size": {"type": "integer", "minimum": 1},
    "max_draws": {"type": "integer", "minimum": 1},
}


def choices_of(hp):
    """`tfnas.tuners.decisions.choices_of` for evolution."""
    return _choices_of(hp, "EvolutionOracle")


class EvolutionOracle(ResumableOracle):
    """Regularized (aging) evolution (Real et al., AAAI 2019) as a keras-tuner `Oracle`.

    The first `population_size` trials are random architectures. Then each trial draws
    `sample_size` members of the population (with replacement), takes the best as the
    parent and gives one of its decisions, chosen at random, another value: the child.
    Every completed trial joins the population and its oldest member dies, so a line
    survives by having good children, not by one lucky score. Failed trials do not join.
    The defaults are those of the NAS-Bench-201 code (population 10, sample 3;
    `exps/NAS-Bench-201-algos/R_EA.py`); the NAS-Bench-101 notebook uses 50 and 10.

    Every `hp.Choice`, `hp.Int`, `hp.Boolean` and stepped `hp.Float` is a decision;
    `hp.Fixed` keeps its value. Conditional hyperparameters that a mutation makes active
    get random values. A child already tried is drawn again (from another tournament, up
    to `max_draws` times), then a random architecture; when every architecture has been
    tried the search stops. The state (population, random generator) is saved with each
    trial's result, so a chief killed at any point resumes to the same sequence.

    `objective`, `max_trials`, `seed`, `hyperparameters`, `allow_new_entries`,
    `tune_new_entries`, `max_retries_per_trial` and `max_consecutive_failed_trials`
    are `keras_tuner.Oracle`'s.

    With `mutation_scorer` and `mutation_candidates=k > 1`, a tournament's winner gets
    up to k different children not tried yet, and the one the scorer ranks first is
    trained: the zero-cost move proposal of Abdelfattah et al. (ICLR 2021), with a proxy of
    the untrained child network (`tfnas.proxies`) as the scorer.

    Args:
        population_size: members kept; also the number of random trials first.
        sample_size: members drawn for each tournament.
        max_draws: children (then random architectures) drawn to find one not tried.
        mutation_scorer: `scores = f([values, ...])`, higher is better, one number per
            architecture (`{name: value}`); it must give the same numbers again (a
            resumed search calls it again). None: children are not ranked.
        mutation_candidates: children of one winner ranked by `mutation_scorer`.
        chief_timeout: on a keras-tuner worker, seconds to wait for the chief.

    Example:

    >>> import keras_tuner as kt
    >>> oracle = EvolutionOracle(objective=kt.Objective("acc", "max"), max_trials=30,
    ...                          seed=0)
    >>> class Lookup(kt.Tuner):
    ...     def run_trial(self, trial, *args, **kwargs):
    ...         hp = trial.hyperparameters
    ...         return {"acc": sum(hp.Choice(f"edge_{i}", [0, 1, 2, 3, 4])
    ...                            for i in range(6))}
    >>> import tempfile
    >>> tuner = Lookup(oracle=oracle, directory=tempfile.mkdtemp(), project_name="race")
    >>> tuner.search(verbose=0)
    >>> float(oracle.get_best_trials()[0].score)  # of 24; random search, seed 0: 17
    21.0
    """

    def __init__(self, objective=None, max_trials=10, seed=None, hyperparameters=None,
                 allow_new_entries=True, tune_new_entries=True, max_retries_per_trial=0,
                 max_consecutive_failed_trials=3, population_size=10, sample_size=3,
                 max_draws=100, mutation_scorer=None, mutation_candidates=1,
                 chief_timeout=600):
        super().__init__(chief_timeout=chief_timeout, objective=objective,
                         max_trials=max_trials, seed=seed, hyperparameters=hyperparameters,
                         allow_new_entries=allow_new_entries,
                         tune_new_entries=tune_new_entries,
                         max_retries_per_trial=max_retries_per_trial,
                         max_consecutive_failed_trials=max_consecutive_failed_trials)
        for name, value, least in (("population_size", population_size, 2),
                                   ("sample_size", sample_size, 1),
                                   ("max_draws", max_draws, 1),
                                   ("mutation_candidates", mutation_candidates, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"EvolutionOracle: {name} must be an integer >= {least}, "
                                 f"got {value!r}.")
        self.population_size = population_size
        self.sample_size = sample_size
        self.max_draws = max_draws
        if mutation_candidates > 1 and mutation_scorer is None:
            raise ValueError("EvolutionOracle: mutation_candidates > 1 ranks children by "
                             "mutation_scorer; give one (e.g. a zero-cost proxy of the "
                             "child network), or leave mutation_candidates at 1.")
        self.mutation_scorer = mutation_scorer
        self.mutation_candidates = mutation_candidates
        self.population = []  # trial ids, oldest first
        self._joined = set()  # every trial that ever joined, so a re-ended one joins once
        self._rng = np.random.default_rng(self.seed)

    # -- proposals -------------------------------------------------------------------------
    def _draw(self, values):
        return values[int(self._rng.integers(len(values)))]

    def _complete(self, values, mutate=None):
        """Values for every active hyperparameter: those in `values` kept (but `mutate`'s,
        which gets another value), the others random."""
        hps = kt.HyperParameters()
        for hp in self.hyperparameters.space:
            hps.merge([hp])
            if not hps.is_active(hp):
                continue
            options = choices_of(hp)
            if options is None:
                hps.values[hp.name] = hp.value
            elif hp.name == mutate:
                hps.values[hp.name] = self._draw([v for v in options if v != values[mutate]])
            elif hp.name in values and values[hp.name] in options:
                hps.values[hp.name] = values[hp.name]
            else:
                hps.values[hp.name] = self._draw(options)
        return hps.values

    def _parent(self):
        """The values of the winner of one tournament over the population."""
        sign = 1.0 if self.objective.direction == "max" else -1.0
        drawn = self._rng.integers(len(self.population), size=self.sample_size)
        # The first of equals wins: the oldest drawn.
        return self.trials[self.population[int(min(
            drawn, key=lambda i: (-sign * self.trials[self.population[i]].score, i)))]
        ].hyperparameters.values

    def _mutation(self, values):
        """`values` with one decision, chosen at random, given another value."""
        mutable = [hp.name for hp in self.hyperparameters.space
                   if hp.name in values and len(choices_of(hp) or []) > 1]
        if not mutable:
            raise ValueError("EvolutionOracle: the search space has no choices (no "
                             "hp.Choice, hp.Int or hp.Boolean with two values or more); the "
                             "hypermodel must declare at least one.")
        return self._complete(values, mutate=self._draw(mutable))

    def _child(self):
        """A mutation of the winner of one tournament over the population."""
        return self._mutation(self._parent())

    def _ranked_child(self):
        """The scorer's best of up to `mutation_candidates` untried children of one
        winner; None if none was found."""
        parent, children = self._parent(), []
        for _ in range(4 * self.mutation_candidates):
            child = self._mutation(parent)
            if not self._duplicate(child) and child not in children:
                children.append(child)
                if len(children) == self.mutation_candidates:
                    break
        if not children:
            return None
        scores = [float(s) for s in self.mutation_scorer(children)]
        return children[int(np.argmax(scores))]  # the first of equals

    def populate_space(self, trial_id):
        evolving = self.population and len(self.start_order) >= self.population_size
        if evolving and self.mutation_candidates > 1:
            for _ in range(self.max_draws):
                values = self._ranked_child()
                if values is not None:
                    return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": values}
            evolving = False
        for proposal in ([self._child] if evolving else []) + [lambda: self._complete({})]:
            for _ in range(self.max_draws):
                values = proposal()
                if not self._duplicate(values):
                    return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": values}
        # max_draws random architectures were all tried: the space is (nearly) exhausted.
        return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}

    # -- selection -------------------------------------------------------------------------
    def learn(self, trial):
        if trial.trial_id in self._joined or trial.status != \
                kt.engine.trial.TrialStatus.COMPLETED or trial.score is None or \
                not math.isfinite(trial.score):
            return
        self._joined.add(trial.trial_id)
        self.population.append(trial.trial_id)
        if len(self.population) > self.population_size:
            self.population.pop(0)  # the oldest dies

    # -- state -----------------------------------------------------------------------------
    def get_state(self):
        state = super().get_state()
        state["evolution"] = {"population": list(self.population),
                              "joined": sorted(self._joined),
                              "rng": self._rng.bit_generator.state}
        return state

    def set_state(self, state):
        super().set_state(state)
        if "evolution" not in state:
            raise ValueError("EvolutionOracle: the saved oracle state holds no population (it "
                             "was written by another oracle). Use another project_name, or "
                             "overwrite=True.")
        self.population = list(state["evolution"]["population"])
        self._joined = set(state["evolution"]["joined"])
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["evolution"]["rng"]
