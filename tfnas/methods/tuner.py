"""Search with a keras-tuner tuner over the blocks of any tfnas space.

Each block of the space is one `hp.Choice` (`SearchSpace.hyperparameters`);
a trial builds the derived model of its choices, trains it for
`search.trial_epochs` on the training split and reports its validation
accuracy. Costs constrain the trials: with `constraints.mode: "reject"` an
architecture over a limit is not trained and is reported to the oracle as a
failed (infeasible) trial; with `"penalty"` it is trained and its objective is
`val_accuracy - weight * sum(max(0, cost / limit - 1))`. Random search over
a space is the baseline every NAS result needs; `"evolution"` runs regularized
evolution (`tfnas.tuners.EvolutionOracle`) and `"enas"` the ENAS controller
(`tfnas.tuners.EnasOracle`) as the oracle, without weight sharing.
"""

import contextlib
import csv
import json
import math
import os
import time

import keras

from tfnas import data as data_lib
from tfnas import distribute, proxies, schema
from tfnas.architecture import from_choices
from tfnas.costs import LatencyCost, count_parameters
from tfnas.errors import ConfigError
from tfnas.macs import count_macs
from tfnas.methods.base import SearchMethod, prefixed, register_method
from tfnas.methods.candidates import (PROXY_SCHEMA, proxy_names, sample_architectures,
                                      score_architectures)
from tfnas.optimizers import check_learning_rate, make_optimizer
from tfnas.registry import Registry
from tfnas.tuners.enas_oracle import SETTINGS_SCHEMA
from tfnas.tuners.evolution import SETTINGS_SCHEMA as EVOLUTION_SCHEMA
from tfnas.tuners.warm_start import DEFAULTS as WARM_START_DEFAULTS
from tfnas.tuners.warm_start import warm_started

# keras-tuner tuners by name; each factory takes the hypermodel, objective, seed, the
# tuner's directory and project, and the `search.tuner` arguments.
TUNERS = Registry("keras-tuner tuner")


def _resumable_tuner(oracle, hypermodel, directory, project_name, overwrite):
    """A keras-tuner `Tuner` whose state files are all written whole (ResumableTuner)."""
    from tfnas.tuners.resumable import ResumableTuner  # pylint: disable=import-outside-toplevel

    return ResumableTuner(oracle=oracle, hypermodel=hypermodel, directory=directory,
                          project_name=project_name, overwrite=overwrite)


# Every factory takes the tuner's settings by name (no **kwargs), so that
# `TUNERS.check` rejects an argument the tuner does not take before a run starts.
def _random(hypermodel, objective, seed, directory, project_name, overwrite,
            max_consecutive_failed_trials, initial_values=(), max_trials=10):
    import keras_tuner as kt  # pylint: disable=import-outside-toplevel

    oracle = warm_started(kt.oracles.RandomSearchOracle)(
        objective=objective, max_trials=max_trials, seed=seed,
        max_consecutive_failed_trials=max_consecutive_failed_trials,
        initial_values=initial_values)
    return _resumable_tuner(oracle, hypermodel, directory, project_name, overwrite)


def _hyperband(hypermodel, objective, seed, directory, project_name, overwrite,
               max_consecutive_failed_trials, initial_values=(), max_epochs=9, factor=3,
               hyperband_iterations=1):
    import keras_tuner as kt  # pylint: disable=import-outside-toplevel

    if initial_values:
        raise _warm_start_refused("hyperband")
    return kt.Hyperband(hypermodel=hypermodel, objective=objective, seed=seed,
                        directory=directory, project_name=project_name, overwrite=overwrite,
                        max_consecutive_failed_trials=max_consecutive_failed_trials,
                        max_epochs=max_epochs, factor=factor,
                        hyperband_iterations=hyperband_iterations)


def _bayesian(hypermodel, objective, seed, directory, project_name, overwrite,
              max_consecutive_failed_trials, initial_values=(), max_trials=10,
              num_initial_points=None, alpha=1e-4, beta=2.6):
    import keras_tuner as kt  # pylint: disable=import-outside-toplevel

    oracle = warm_started(kt.oracles.BayesianOptimizationOracle)(
        objective=objective, max_trials=max_trials, seed=seed,
        max_consecutive_failed_trials=max_consecutive_failed_trials,
        num_initial_points=num_initial_points, alpha=alpha, beta=beta,
        initial_values=initial_values)
    return _resumable_tuner(oracle, hypermodel, directory, project_name, overwrite)


_UNSET = object()  # an EnasOracle argument the config leaves out: EnasOracle's default
# The tuners whose first trials search.warm_start can choose.
WARM_STARTED = ("random", "evolution", "bayesian", "enas")


def _warm_start_refused(name):
    return ConfigError(f"search.warm_start: the {name!r} tuner cannot start from given "
                       f"architectures; use one of {list(WARM_STARTED)}, or remove "
                       "search.warm_start.")


def _enas(hypermodel, objective, seed, directory, project_name, overwrite,
          max_consecutive_failed_trials, initial_values=(), max_trials=10, preset=_UNSET,
          lstm_units=_UNSET,
          tanh_constant=_UNSET, op_tanh_reduce=_UNSET, input_decisions=_UNSET,
          temperature=_UNSET, entropy_weight=_UNSET, baseline_decay=_UNSET,
          initial_baseline=_UNSET, learning_rate=_UNSET, samples_per_update=_UNSET,
          failed_reward=_UNSET, resample_seen=_UNSET, pretrain_steps=_UNSET,
          pretrain_learning_rate=_UNSET):
    from tfnas.tuners import EnasOracle  # pylint: disable=import-outside-toplevel

    given = dict(preset=preset, lstm_units=lstm_units, tanh_constant=tanh_constant,
                 op_tanh_reduce=op_tanh_reduce, input_decisions=input_decisions,
                 temperature=temperature, entropy_weight=entropy_weight,
                 baseline_decay=baseline_decay, initial_baseline=initial_baseline,
                 learning_rate=learning_rate, samples_per_update=samples_per_update,
                 failed_reward=failed_reward, resample_seen=resample_seen,
                 pretrain_steps=pretrain_steps, pretrain_learning_rate=pretrain_learning_rate)
    oracle = EnasOracle(objective=objective, max_trials=max_trials, seed=seed,
                        max_consecutive_failed_trials=max_consecutive_failed_trials,
                        initial_values=initial_values,
                        **{k: v for k, v in given.items() if v is not _UNSET})
    return _resumable_tuner(oracle, hypermodel, directory, project_name, overwrite)


def _evolution(hypermodel, objective, seed, directory, project_name, overwrite,
               max_consecutive_failed_trials, initial_values=(), max_trials=10,
               population_size=10, sample_size=3, max_draws=100, mutation_scorer=None,
               mutation_candidates=1):
    import keras_tuner as kt  # pylint: disable=import-outside-toplevel

    from tfnas.tuners import EvolutionOracle  # pylint: disable=import-outside-toplevel

    oracle = warm_started(EvolutionOracle)(
        objective=objective, max_trials=max_trials, seed=seed,
        max_consecutive_failed_trials=max_consecutive_failed_trials,
        population_size=population_size, sample_size=sample_size, max_draws=max_draws,
        mutation_scorer=mutation_scorer, mutation_candidates=mutation_candidates,
        initial_values=initial_values)
    return _resumable_tuner(oracle, hypermodel, directory, project_name, overwrite)


# keras-tuner reads max_trials 0 (or None) as "no limit": a trial count is at least 1.
_TRIALS = {"max_trials": schema.integer(1)}
TUNERS.register("random", arguments=_TRIALS)(_random)
TUNERS.register("enas", arguments={**_TRIALS, **SETTINGS_SCHEMA})(_enas)
TUNERS.register("evolution", arguments={**_TRIALS, **EVOLUTION_SCHEMA})(_evolution)
TUNERS.register("hyperband", arguments={
    "max_epochs": schema.integer(1), "factor": schema.integer(2),
    "hyperband_iterations": schema.integer(1)})(_hyperband)
TUNERS.register("bayesian", arguments={
    **_TRIALS, "num_initial_points": schema.integer(1, nullable=True),
    "alpha": schema.number(exclusive_minimum=0), "beta": schema.number(minimum=0)})(_bayesian)
# The settings tfnas passes to every tuner factory.
TUNER_SETTINGS = ("hypermodel", "objective", "seed", "directory", "project_name", "overwrite",
                  "max_consecutive_failed_trials", "initial_values")
# ... and to evolution's, from search.warm_start.mutations.
RANKED_MUTATIONS = ("mutation_scorer", "mutation_candidates")


COST_LIMITS = ("max_parameters", "max_macs", "max_latency_ms")
# The keys of `search.constraints` that limit an architecture's cost (every method that
# draws whole architectures takes them).
COST_LIMITS_SCHEMA = {
    "max_parameters": schema.integer(1, nullable=True),
    "max_macs": schema.integer(1, nullable=True),
    "max_latency_ms": schema.number(exclusive_minimum=0, nullable=True),
    "latency_table": {"type": ["string", "null"]},
}


def check_cost_limits(constraints):
    """Raises `ConfigError` unless a latency limit and a latency table come together."""
    if (constraints["max_latency_ms"] is None) != (constraints["latency_table"] is None):
        raise ConfigError("search.constraints.max_latency_ms and latency_table go together: "
                          "a latency limit needs a latency table of the space (tfnas "
                          "latency-table), and a table needs the limit.")


@register_method
class TunerSearch(SearchMethod):
    """`search.method: "tuner"`: keras-tuner's RandomSearch, Hyperband or
    BayesianOptimization, or the ENAS controller (`tfnas.tuners.EnasOracle`, each trial
    trained on its own), over the space's blocks."""

    name = "tuner"
    defaults = {
        # {"type": "random" | "evolution" | "hyperband" | "bayesian" | "enas", and that
        # tuner's arguments}
        "tuner": {"type": "random", "max_trials": 10},
        "trial_epochs": 3,       # training epochs of each trial (Hyperband: its max_epochs)
        "objective": "val_accuracy",
        "constraints": {
            "max_parameters": None, "max_macs": None, "max_latency_ms": None,
            "latency_table": None,   # a latency table of this space, for max_latency_ms
            "mode": "reject",        # "reject": infeasible trials fail; "penalty": objective
            "weight": 1.0,           # "penalty": objective loss per unit of relative excess
        },
        "optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9,
                      "weight_decay": 1e-4, "schedule": "cosine"},
        # null, or {"proxy": a tfnas.proxies name or a list (their vote), "candidates":
        # architectures scored untrained, "trials": how many of the best the first trials
        # train (evolution: its first population), "mutations": evolution ranks this many
        # children of each tournament's winner by the proxy and trains the best}
        "warm_start": None,
    }
    open_keys = ("tuner", "optimizer")
    schema = {
        "tuner": schema.NAMED,
        "trial_epochs": schema.integer(1),
        "objective": {"enum": ["val_accuracy", "val_loss"]},
        "constraints": schema.obj({
            **COST_LIMITS_SCHEMA,
            "mode": {"enum": ["reject", "penalty"]},
            "weight": schema.number(exclusive_minimum=0),
        }),
        "optimizer": schema.OPEN,
        "warm_start": {"anyOf": [{"type": "null"}, {
            "type": "object", "additionalProperties": False, "properties": {
                "proxy": PROXY_SCHEMA, "candidates": schema.integer(1),
                "trials": schema.integer(1), "mutations": schema.integer(1)}}]},
    }
    hints = {"trial_epochs": "each trial trains the derived model at least one epoch",
             "warm_start": 'null or {"proxy", "candidates", "trials", "mutations"}; the '
                           f"proxies are {list(proxies.PROXIES)}"}
    WARM_START = WARM_START_DEFAULTS

    @classmethod
    def check_section(cls, section):
        check_cost_limits(section["constraints"])
        check_learning_rate("search.optimizer", section["optimizer"])
        name, arguments = TUNERS.split(section["tuner"])
        given = sorted(set(arguments) & {*TUNER_SETTINGS, *RANKED_MUTATIONS})
        if given:
            raise ConfigError(f"search.tuner.{given[0]} is set by tfnas (from the config's "
                              "seed, objective and search.warm_start); remove it from "
                              "search.tuner.")
        prefixed("search.tuner", TUNERS.check, section["tuner"],
                 **dict.fromkeys(TUNER_SETTINGS))
        if section["warm_start"] is not None and name not in WARM_STARTED:
            raise _warm_start_refused(name)
        if (section["warm_start"] or {}).get("mutations", 1) > 1 and name != "evolution":
            raise ConfigError(f"search.warm_start.mutations ranks the children of evolution; "
                              f"the {name!r} tuner has none. Use the 'evolution' tuner, or "
                              "remove search.warm_start.mutations.")

    def __init__(self, config, prepared):
        super().__init__(config, prepared)
        s = self.section
        prefixed("search.optimizer", make_optimizer, s["optimizer"], 1)
        table = s["constraints"]["latency_table"]
        self.latency = LatencyCost.from_table(table, self.space) if table else None

    def costs(self, choices, model):
        """`{limit key: cost}` of the architecture for every configured limit."""
        c, result = self.section["constraints"], {}
        if c["max_parameters"] is not None:
            result["max_parameters"] = count_parameters(model)
        if c["max_macs"] is not None:
            result["max_macs"] = count_macs(model)
        if c["max_latency_ms"] is not None:
            result["max_latency_ms"] = self.latency.of_choices(choices)
        return result

    def excess(self, costs):
        """Relative excess over each limit that an architecture breaks, `{key: cost/limit-1}`."""
        c = self.section["constraints"]
        return {k: v / c[k] - 1 for k, v in costs.items() if v > c[k]}

    def _tuner(self, run_path, overwrite=False, initial_values=()):
        import keras_tuner as kt  # pylint: disable=import-outside-toplevel

        s = self.section
        objective = s["objective"]
        if s["constraints"]["mode"] == "penalty":
            objective = kt.Objective("score", "max")
        name, arguments = TUNERS.split(s["tuner"])
        if name == "hyperband":
            arguments.setdefault("max_epochs", s["trial_epochs"])
        mutations = {**self.WARM_START, **(s["warm_start"] or {})}["mutations"]
        if name == "evolution" and mutations > 1:
            arguments.update(mutation_scorer=self._score_children,
                             mutation_candidates=mutations)
        hypermodel = _hypermodel(self)
        tuner = TUNERS.get({"type": name, **arguments},
                           hypermodel=hypermodel, objective=objective,
                           seed=self.config["seed"], overwrite=overwrite,
                           directory=os.path.join(run_path, "checkpoints"), project_name="tuner",
                           max_consecutive_failed_trials=10 ** 6,
                           initial_values=list(initial_values))
        # The tuner builds a model once to learn the space; constraints apply to trials.
        hypermodel.trials_started = True
        # keras-tuner enters the strategy around each trial's build and fit (its
        # `distribution_strategy`), after clearing Keras's session between trials.
        tuner.distribution_strategy = distribute.strategy(self.config["distribute"])
        return tuner

    def distribution_scope(self):
        # A scope around the whole search would not survive the session clearing that
        # keras-tuner does between trials: the tuner enters the strategy itself.
        return contextlib.nullcontext()

    def search(self, run, verbose=2):
        prepared, s = self.prepared, self.section
        elapsed_path = run.file("checkpoints", "tuner_elapsed.json")
        before = (json.load(open(elapsed_path, encoding="utf-8"))["seconds"]
                  if os.path.exists(elapsed_path) else 0.0)
        start = time.time()
        print(f"== search: keras-tuner {TUNERS.split(s['tuner'])[0]} over the "
              f"{len(self.space.blocks())} blocks of the {self.space.name} space, "
              f"{s['trial_epochs']} epochs per trial, {prepared.splits.sizes['train']} + "
              f"{prepared.splits.sizes['val']} images")
        tuner = self._tuner(run.path, initial_values=self._warm_start(run, verbose))
        # The training batches are made per trial in HyperModel.fit, epoch by epoch.
        tuner.search(epochs=s["trial_epochs"], validation_data=prepared.batches("val", False),
                     verbose=min(verbose, 1))
        trials = self._trial_records(tuner)
        seconds = round(before + time.time() - start, 1)
        run.write_json(os.path.join("logs", "trials.json"), trials)
        with open(elapsed_path, "w", encoding="utf-8") as f:
            json.dump({"seconds": seconds}, f)
        bugs = [t for t in trials if t["status"] == "INVALID"]
        if bugs:
            raise RuntimeError(f"Trial {bugs[0]['trial']} of the tuner crashed:\n"
                               f"{bugs[0]['message']}")
        best = _best_trials(tuner)
        if not best:
            raise ConfigError("No trial of the tuner met the constraints "
                              f"{ {k: v for k, v in s['constraints'].items() if k in COST_LIMITS and v} }; "
                              "loosen them, or raise the tuner's max_trials.")
        choices = self.space.hyperparameters(best[0].hyperparameters.copy())
        arch = from_choices(self.space, choices, metadata={
            "method": self.name, "tuner": s["tuner"], "search_seconds": seconds,
            "dataset": self.config["data"]["dataset"], "trial_epochs": s["trial_epochs"],
            "trials": len(trials),
            "infeasible_trials": sum(t["status"] == "FAILED" for t in trials),
            "best_trial": best[0].trial_id, "objective": s["objective"],
            "best_score": best[0].score})
        return arch, self.load(run.path)

    def _warm_start(self, run, verbose):
        """The keras-tuner values of the best architectures of `search.warm_start` by a
        zero-cost proxy (those within the cost limits), best first; () without one. The
        ranking is written to logs/warm_start.csv; a resumed search ranks again (the same
        seed, the same ranking) and skips the trials already run."""
        if self.section["warm_start"] is None:
            return ()
        settings = {**self.WARM_START, **self.section["warm_start"]}
        names = proxy_names(settings["proxy"])
        start = time.time()
        drawn = sample_architectures(self.space, settings["candidates"], self.config["seed"],
                                     with_values=True)
        rows = score_architectures(self.space, [c for c, _ in drawn], *self._proxy_batch(),
                                   names, self.config["seed"], self.costs, self.excess)
        ranked = sorted((r for r in rows if r["feasible"]),
                        key=lambda r: (-r["score"], r["index"]))[:settings["trials"]]
        path = run.file("logs", "warm_start.csv")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["rank", "index", "choices", "score", *sorted(rows[0]["scores"])])
            for rank, r in enumerate(ranked):
                writer.writerow([rank, r["index"], json.dumps(r["choices"], sort_keys=True),
                                 repr(r["score"]),
                                 *[repr(r["scores"][k]) for k in sorted(r["scores"])]])
        if verbose:
            print(f"   warm start: {len(rows)} architectures scored by {' + '.join(names)} "
                  f"untrained in {time.time() - start:.1f} s; the first {len(ranked)} trials "
                  "train the best")
        return [drawn[r["index"]][1] for r in ranked]

    def _proxy_batch(self):
        """The one training batch every zero-cost score of this search is taken on."""
        if getattr(self, "_proxy_images", None) is None:
            images, labels = next(iter(self.prepared.batches("train", True, epoch=0)))
            self._proxy_images = (images.numpy(), labels.numpy())
        return self._proxy_images

    def _score_children(self, children):
        """EvolutionOracle's `mutation_scorer`: the warm start's proxy of each child's
        untrained network (their vote among the children, for several proxies); a child
        over a cost limit ranks below every other."""
        import keras_tuner as kt  # pylint: disable=import-outside-toplevel

        settings = {**self.WARM_START, **self.section["warm_start"]}
        candidates = []
        for values in children:
            hp = kt.HyperParameters()
            hp.values = dict(values)
            candidates.append(self.space.hyperparameters(hp))
        rows = score_architectures(self.space, candidates, *self._proxy_batch(),
                                   proxy_names(settings["proxy"]), self.config["seed"],
                                   self.costs, self.excess)
        return [r["score"] if r["feasible"] else -math.inf for r in rows]

    def _trial_records(self, tuner):
        records = []
        for trial in sorted(tuner.oracle.trials.values(), key=lambda t: t.trial_id):
            metrics = {name: trial.metrics.get_best_value(name)
                       for name in trial.metrics.metrics}
            records.append({"trial": trial.trial_id, "status": str(trial.status),
                            "choices": self.space.hyperparameters(trial.hyperparameters.copy()),
                            "score": trial.score, "metrics": metrics,
                            # a failed trial's reason is the last line of its traceback
                            "message": (trial.message or "").strip() if trial.status ==
                            "INVALID" else ((trial.message or "").strip().splitlines()
                                            or [None])[-1]})
        return records

    def load(self, run_path):
        """The weights of the best trial's model: training starts from them (train.inherit)."""
        tuner = self._tuner(run_path)
        best = _best_trials(tuner)
        if not best:
            return None
        return tuner.load_model(best[0]).get_weights()

    def inherit(self, searched, architecture, model):
        if searched is None:
            return False
        model.set_weights(searched)
        return True


def _best_trials(tuner):
    """The completed trials, best first (keras-tuner also ranks failed ones)."""
    trials = tuner.oracle.get_best_trials(len(tuner.oracle.trials))
    return [t for t in trials if t.status == "COMPLETED" and t.score is not None]


def _hypermodel(method):
    """A keras-tuner HyperModel: the space's blocks as hyperparameters; builds and trains one
    derived model per trial (keras-tuner is imported only when a tuner search runs)."""
    import keras_tuner as kt  # pylint: disable=import-outside-toplevel

    class HyperModel(kt.HyperModel):
        def build(self, hp):
            # Every trial starts from the same seed: its result depends on its choices.
            keras.utils.set_random_seed(method.config["seed"])
            choices = method.space.hyperparameters(hp)
            model = method.space.build_model(choices)
            costs = method.costs(choices, model)
            excess = method.excess(costs)
            if (excess and method.section["constraints"]["mode"] == "reject"
                    and getattr(self, "trials_started", False)):
                raise kt.errors.FailedTrialError(
                    "infeasible: " + ", ".join(f"{k[4:]} {costs[k]:,.6g} > "
                                               f"{method.section['constraints'][k]:,}"
                                               for k in excess))
            self.penalty = method.section["constraints"]["weight"] * sum(excess.values())
            steps = method.prepared.steps("train") * method.section["trial_epochs"]
            model.compile(optimizer=make_optimizer(method.section["optimizer"], steps),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=["accuracy"])
            return model

        def fit(self, hp, model, *args, callbacks=None, epochs=1, initial_epoch=0, **kwargs):
            # Each epoch's batches are a function of (seed, epoch), as in every tfnas
            # stage: a reshuffling dataset would give a trial other batches when run
            # again, resumed (Hyperband's later brackets) or distributed.
            del args  # tuner.search passes no training data
            prepared = method.prepared
            train = data_lib.epochs(lambda e: prepared.batches("train", True, epoch=e),
                                    initial_epoch, max(epochs, initial_epoch + 1))
            callbacks = list(callbacks or [])
            if method.section["constraints"]["mode"] == "penalty":
                callbacks.insert(0, _Score(self.penalty))
            # keras-tuner calls this outside the strategy's scope; the model holds it.
            with model.distribute_strategy.scope():
                distribute.synchronize_batch_norms(model)
            return model.fit(train, epochs=epochs, initial_epoch=initial_epoch,
                             steps_per_epoch=prepared.steps("train"), callbacks=callbacks,
                             **kwargs)

    return HyperModel()


class _Score(keras.callbacks.Callback):
    """Adds `score = val_accuracy - penalty` to the epoch logs (the penalized objective)."""

    def __init__(self, penalty):
        super().__init__()
        self.penalty = float(penalty)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and "val_accuracy" in logs:
            logs["score"] = float(logs["val_accuracy"]) - self.penalty
