"""ENAS's controller as a keras-tuner Oracle."""

import json
import math
import os

import keras
import keras_tuner as kt
import numpy as np
import tensorflow as tf
from keras_tuner.engine import hyperparameters as hp_types

from tfnas.run_dir import write_json_atomically
from tfnas.tuners.controller import Controller, decode, encode
from tfnas.tuners.distributed import wait_for_chief

def _number(**limits):
    return {"type": "number", **limits}


# JSON Schema of the settings a config passes to `EnasOracle` (`search.controller`, the
# tuner method's `{"type": "enas", ...}`): types and ranges, checked before a run starts.
SETTINGS_SCHEMA = {
    "lstm_units": {"type": "integer", "minimum": 1},
    "tanh_constant": {"type": ["number", "null"], "exclusiveMinimum": 0},
    "op_tanh_reduce": _number(exclusiveMinimum=0),
    "input_decisions": {"type": ["array", "null"], "items": {"type": "string"}},
    "temperature": {"type": ["number", "null"], "exclusiveMinimum": 0},
    "entropy_weight": _number(minimum=0),
    "baseline_decay": _number(minimum=0, exclusiveMaximum=1),
    "learning_rate": _number(exclusiveMinimum=0),
    "samples_per_update": {"type": "integer", "minimum": 1},
    "failed_reward": {"type": ["number", "null"]},
    "resample_seen": {"type": "integer", "minimum": 0},
    "max_retries_per_trial": {"type": "integer", "minimum": 0},
}

# The most choices one decision may have (an hp.Int over a huge range is not a decision).
MAX_CHOICES = 10_000


def choices_of(hp):
    """The finite list of values of a hyperparameter the controller decides, or None for
    `Fixed`. `Choice`, `Boolean`, `Int` and stepped `Float` are decisions."""
    if isinstance(hp, hp_types.Fixed):
        return None
    if isinstance(hp, hp_types.Choice):
        return list(hp.values)
    if isinstance(hp, hp_types.Boolean):
        return [False, True]
    if isinstance(hp, (hp_types.Int, hp_types.Float)):
        if isinstance(hp, hp_types.Float) and hp.step is None:
            raise ValueError(
                f"EnasOracle chooses among finite values; hp.Float {hp.name!r} has no step. "
                "Give it a step or use hp.Choice.")
        count = hp._get_n_values()  # pylint: disable=protected-access
        if count > MAX_CHOICES:
            raise ValueError(f"hp.Int {hp.name!r} has {count:,} values, more than the "
                             f"{MAX_CHOICES:,} one decision may have; give it a larger step.")
        values = list(hp.values)
        return [int(round(v)) for v in values] if isinstance(hp, hp_types.Int) else values
    raise ValueError(f"EnasOracle cannot decide hyperparameter {hp.name!r} of type "
                     f"{type(hp).__name__}; use hp.Choice, hp.Int, hp.Boolean or hp.Fixed.")


class EnasOracle(kt.Oracle):
    """The ENAS controller (Pham et al., 2018) as a keras-tuner `Oracle`.

    An LSTM samples every decision of the search space in turn (each `hp.Choice`,
    `hp.Int`, `hp.Boolean`; inactive conditional ones are skipped), its input at
    each step the embedding of the previous decision. Each finished trial's
    objective is the reward (negated for objectives to minimize); every
    `samples_per_update` rewards the controller takes one REINFORCE step,
    `−log p(arc) · (R − b)` with a moving-average baseline `b`, by Adam. The
    defaults are the released ENAS settings (REFERENCE §3): LSTM 64 units;
    logits `1.10·tanh(l)` for input decisions and `1.10/2.5·tanh(l)` for
    operations; entropy bonus 1e-4 on the reward; `b ← b − 0.01·(b − R)`; Adam
    learning rate 0.0035, β1 = 0, ε = 1e-3; 10 architectures per update.
    Those settings were made for tens of thousands of samples; for a budget of
    a few hundred trials a larger `learning_rate` (e.g. 0.05) is the useful
    change (see `benchmarks/enas_oracle.py`).

    Args:
        objective, max_trials, seed, hyperparameters, allow_new_entries,
        tune_new_entries, max_retries_per_trial, max_consecutive_failed_trials:
            as `keras_tuner.Oracle`.
        lstm_units: controller LSTM size.
        tanh_constant: `c` of the input decisions' logits `c·tanh(l/T)`; None
            for raw logits.
        op_tanh_reduce: the other decisions use `tanh_constant / op_tanh_reduce`.
        input_decisions: names of the decisions that pick an input (or a
            function of the name); by default those whose name ends in "input".
        temperature: `T` above, None for 1.
        entropy_weight: weight of the sample's entropy added to the reward.
        baseline_decay: the baseline keeps this fraction at each reward.
        learning_rate: the controller's Adam learning rate.
        samples_per_update: rewards averaged in one controller step.
        failed_reward: the reward of a failed trial; None: the lowest reward
            seen so far (a failure before any reward teaches nothing).
        resample_seen: draws allowed to find an architecture not tried yet
            before a repeat is accepted (0: repeats are fine, as in ENAS).
        chief_timeout: on a keras-tuner worker (`KERASTUNER_TUNER_ID` other
            than "chief"), seconds to wait for the chief before a
            `ConnectionError` that names its address (keras-tuner itself
            would wait an hour without a word).

    Example:

    ```python
    tuner = keras_tuner.Tuner(
        oracle=EnasOracle(objective="val_accuracy", max_trials=200),
        hypermodel=build_model, directory="runs", project_name="enas")
    tuner.search(x, y, validation_data=(x_val, y_val), epochs=2)
    ```
    """

    def __init__(self, objective=None, max_trials=10, seed=None, hyperparameters=None,
                 allow_new_entries=True, tune_new_entries=True, max_retries_per_trial=0,
                 max_consecutive_failed_trials=3, lstm_units=64, tanh_constant=1.10,
                 op_tanh_reduce=2.5, input_decisions=None, temperature=None,
                 entropy_weight=1e-4, baseline_decay=0.99, learning_rate=0.0035,
                 samples_per_update=10, failed_reward=None, resample_seen=20,
                 chief_timeout=600):
        wait_for_chief(chief_timeout)
        super().__init__(objective=objective, max_trials=max_trials, seed=seed,
                         hyperparameters=hyperparameters, allow_new_entries=allow_new_entries,
                         tune_new_entries=tune_new_entries,
                         max_retries_per_trial=max_retries_per_trial,
                         max_consecutive_failed_trials=max_consecutive_failed_trials)
        if samples_per_update < 1:
            raise ValueError(f"samples_per_update must be >= 1, got {samples_per_update}.")
        if not 0.0 <= baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay}.")
        self.lstm_units = int(lstm_units)
        self.tanh_constant = tanh_constant
        self.op_tanh_reduce = float(op_tanh_reduce)
        if input_decisions is None:
            self._is_input = lambda name: name.endswith("input")
        elif callable(input_decisions):
            self._is_input = input_decisions
        else:
            names = frozenset(input_decisions)
            self._is_input = names.__contains__
        self.temperature = temperature
        self.entropy_weight = float(entropy_weight)
        self.baseline_decay = float(baseline_decay)
        self.learning_rate = float(learning_rate)
        self.samples_per_update = int(samples_per_update)
        self.failed_reward = failed_reward
        self.resample_seen = int(resample_seen)
        self._rng = np.random.default_rng(self.seed)
        self.controller = Controller(self.lstm_units, seed=self.seed)
        self._optimizer = None
        self.baseline = 0.0
        self.samples = 0  # rewards given to the controller
        self.updates = 0
        self.lowest_reward = None
        self._decisions = {}  # trial_id -> [[name, index], ...]
        self._pending = []  # [[trial_id, reward], ...] not yet in a controller step
        self._rewarded = set()

    # -- the search space ------------------------------------------------------------------
    def _tanh_constants(self):
        if self.tanh_constant is None:
            return {}
        return {name: self.tanh_constant if self._is_input(name)
                else self.tanh_constant / self.op_tanh_reduce
                for name in self.controller.sizes}

    def _decisions_of_space(self):
        decisions = {}
        for hp in self.hyperparameters.space:
            values = choices_of(hp)
            # A one-value choice decides nothing: it takes its value, as a Fixed does.
            if values is not None and len(values) > 1:
                decisions[hp.name] = values
        if not decisions:
            raise ValueError(
                "EnasOracle: the search space has no choices (no hp.Choice, hp.Int or "
                "hp.Boolean with two values or more); the hypermodel must declare at least "
                "one.")
        for name, values in decisions.items():
            self.controller.add(name, len(values))
        return decisions

    def update_space(self, hyperparameters):
        known_by_name = {hp.name: hp for hp in self.hyperparameters.space}
        saved = getattr(self, "_saved_names", None)
        new = sorted(hp.name for hp in hyperparameters.space if hp.name not in known_by_name)
        if saved and new:
            # After a reload keras-tuner builds the hypermodel only inside trials, so the
            # first trial of another space ends here.
            raise ValueError(
                f"EnasOracle: this project holds a search over {sorted(saved)} but the "
                f"hypermodel declares {new}: it is another search space. Use another "
                "project_name, or overwrite=True.")
        for hp in hyperparameters.space:
            known = known_by_name.get(hp.name)
            if known is not None and known.conditions == hp.conditions:
                if choices_of(known) != choices_of(hp):
                    raise ValueError(
                        f"EnasOracle: hyperparameter {hp.name!r} takes {choices_of(hp)} "
                        f"but this search's state has {choices_of(known)}: the state is from "
                        "another search space. Use another project_name, or overwrite=True.")
        super().update_space(hyperparameters)

    # -- sampling --------------------------------------------------------------------------
    def _sample(self, decisions):
        constants = self._tanh_constants()
        hps = kt.HyperParameters()
        x, state = self.controller.begin()
        sampled = []
        for hp in self.hyperparameters.space:
            hps.merge([hp])
            if not hps.is_active(hp):
                continue
            if hp.name not in decisions:
                hps.values[hp.name] = hp.value if isinstance(hp, hp_types.Fixed) else hp.default
                continue
            p, state = self.controller.step(x, state, hp.name, constants.get(hp.name),
                                            self.temperature)
            index = int(self._rng.choice(len(p), p=p / p.sum()))
            hps.values[hp.name] = decisions[hp.name][index]
            sampled.append([hp.name, index])
            x = self.controller.embed(hp.name, index)
        return hps.values, sampled

    def populate_space(self, trial_id):
        decisions = self._decisions_of_space()
        for _ in range(self.resample_seen + 1):
            values, sampled = self._sample(decisions)
            if not self._duplicate(values):
                break
        self._decisions[trial_id] = sampled
        return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": values}

    # -- learning --------------------------------------------------------------------------
    @kt.synchronized
    def end_trial(self, trial):
        # keras-tuner saves the oracle in the middle of end_trial, with the trial both ended and
        # still ongoing, and before the reward is recorded here: a chief killed then would run
        # the trial again on restart and lose its reward. The state is saved once, complete.
        self._defer_saving = True
        try:
            super().end_trial(trial)
            self._reward(self.trials[trial.trial_id])
        finally:
            self._defer_saving = False
        self.save()

    def _reward(self, trial):
        status = kt.engine.trial.TrialStatus
        # A trial is rewarded once, though keras-tuner may end it again (a retry after a chief
        # restart).
        if trial.trial_id not in self._decisions or trial.trial_id in self._rewarded:
            return
        if trial.status == status.COMPLETED and trial.score is not None and \
                math.isfinite(trial.score):
            reward = float(trial.score) * (1.0 if self.objective.direction == "max" else -1.0)
            self.lowest_reward = reward if self.lowest_reward is None else \
                min(self.lowest_reward, reward)
        elif trial.status == status.FAILED:
            reward = self.failed_reward if self.failed_reward is not None else \
                self.lowest_reward
            if reward is None:
                return
        else:  # INVALID: retried with the same values, rewarded then
            return
        self._pending.append([trial.trial_id, float(reward)])
        self._rewarded.add(trial.trial_id)
        if len(self._pending) >= self.samples_per_update:
            self._update()

    def _build_optimizer(self):
        self._optimizer = keras.optimizers.Adam(self.learning_rate, beta_1=0.0, epsilon=1e-3)
        self._optimizer.build(self.controller.variables)
        self._optimizer_size = len(self.controller.variables)

    def _update(self):
        """One REINFORCE step on the pending rewards (the released ENAS loss)."""
        constants = self._tanh_constants()
        variables = self.controller.variables
        if self._optimizer is None or self._optimizer_size != len(variables):
            iterations = 0 if self._optimizer is None else int(self._optimizer.iterations)
            self._build_optimizer()  # a grown space restarts the moments, not the count
            self._optimizer.iterations.assign(iterations)
        with tf.GradientTape() as tape:
            loss = 0.0
            for trial_id, reward in self._pending:
                log_prob, entropy = self.controller.log_prob_and_entropy(
                    self._decisions[trial_id], constants, self.temperature)
                reward = reward + self.entropy_weight * float(entropy)
                self.baseline -= (1.0 - self.baseline_decay) * (self.baseline - reward)
                loss = loss - log_prob * (reward - self.baseline)
            loss = loss / len(self._pending)
        # The last decision's embedding feeds nothing: no gradient, zero rather than a warning.
        gradients = [keras.ops.zeros_like(v) if g is None else g
                     for g, v in zip(tape.gradient(loss, variables), variables)]
        self._optimizer.apply_gradients(zip(gradients, variables))
        self.samples += len(self._pending)
        self.updates += 1
        self._pending = []

    def most_likely_values(self):
        """The controller's greedy architecture: each decision's most probable value given
        the ones before it, as `{name: value}` (the space's Fixed values included)."""
        decisions = self._decisions_of_space()
        values = {}
        for name, probabilities in self.probabilities().items():
            options = decisions[name]
            values[name] = options[int(np.argmax(list(probabilities.values())))]
        for hp in self.hyperparameters.space:
            if isinstance(hp, hp_types.Fixed):
                values.setdefault(hp.name, hp.value)
            elif hp.name not in decisions and choices_of(hp):  # a one-value choice
                values.setdefault(hp.name, choices_of(hp)[0])
        return values

    def probabilities(self, values=None):
        """The controller's distribution of each decision along one path (`values`, a dict
        name → value, default: its most likely choices): `{name: {value: p}}`."""
        decisions = self._decisions_of_space()
        constants = self._tanh_constants()
        hps = kt.HyperParameters()
        x, state = self.controller.begin()
        result = {}
        for hp in self.hyperparameters.space:
            hps.merge([hp])
            if not hps.is_active(hp) or hp.name not in decisions:
                if hps.is_active(hp):
                    hps.values[hp.name] = hp.value if isinstance(hp, hp_types.Fixed) \
                        else hp.default
                continue
            p, state = self.controller.step(x, state, hp.name, constants.get(hp.name),
                                            self.temperature)
            options = decisions[hp.name]
            result[hp.name] = dict(zip(map(str, options), p.tolist()))
            index = options.index(values[hp.name]) if values and hp.name in values \
                else int(np.argmax(p))
            hps.values[hp.name] = options[index]
            x = self.controller.embed(hp.name, index)
        return result

    # -- state -----------------------------------------------------------------------------
    def save(self):
        if not getattr(self, "_defer_saving", False):
            _write_json_atomically(self._get_oracle_fname(), self.get_state())

    def reload(self):
        try:
            super().reload()
        except ValueError as err:  # json.JSONDecodeError: a file cut short
            raise ValueError(
                f"EnasOracle: cannot reload the project in {self._project_dir}: a state file "
                f"is damaged ({type(err).__name__}: {err}). Restore it, use another "
                "project_name, or overwrite=True.") from None
        # Names the hypermodel must declare: a reloaded search over another space would
        # hand its trials the old space's values.
        self._saved_names = {hp.name for hp in self.hyperparameters.space}
        # keras-tuner writes a new trial's file before the oracle's state: a chief killed
        # between the two leaves a trial the state never started. Its id is given again.
        for trial_id in set(self.trials) - set(self.start_order):
            del self.trials[trial_id]

    def _save_trial(self, trial):
        _write_json_atomically(os.path.join(self._get_trial_dir(trial.trial_id), "trial.json"),
                               trial.get_state())

    def get_state(self):
        state = super().get_state()
        optimizer = None
        if self._optimizer is not None:
            optimizer = [encode(v) for v in self._optimizer.variables]
        state["enas"] = {
            "decisions_order": [[name, size] for name, size in self.controller.sizes.items()],
            "controller": self.controller.get_weights(),
            "optimizer": optimizer,
            "baseline": self.baseline,
            "samples": self.samples,
            "updates": self.updates,
            "lowest_reward": self.lowest_reward,
            "trial_decisions": self._decisions,
            "pending": self._pending,
            "rewarded": sorted(self._rewarded),
            "rng": self._rng.bit_generator.state,
        }
        return state

    def set_state(self, state):
        declared = {hp.name: (hp.conditions, choices_of(hp))
                    for hp in self.hyperparameters.space}
        super().set_state(state)
        for hp in self.hyperparameters.space:
            if hp.name in declared and declared[hp.name] != (hp.conditions, choices_of(hp)):
                raise ValueError(
                    f"EnasOracle: hyperparameter {hp.name!r} takes {declared[hp.name][1]} "
                    f"but the saved state has {choices_of(hp)}: the state is from another "
                    "search space. Use another project_name, or overwrite=True.")
        if "enas" not in state:
            raise ValueError("EnasOracle: the saved oracle state holds no controller (it was "
                             "written by another oracle). Use another project_name, or "
                             "overwrite=True.")
        enas = state["enas"]
        self.controller = Controller(self.lstm_units, seed=self.seed)
        for name, size in enas["decisions_order"]:
            self.controller.add(name, size)
        self.controller.set_weights(enas["controller"])
        self._optimizer = None
        if enas["optimizer"] is not None:
            self._build_optimizer()
            if len(enas["optimizer"]) != len(self._optimizer.variables):
                raise ValueError("EnasOracle: the saved optimizer state does not match the "
                                 "controller.")
            for variable, value in zip(self._optimizer.variables, enas["optimizer"]):
                variable.assign(decode(value))
        self.baseline = float(enas["baseline"])
        self.samples, self.updates = int(enas["samples"]), int(enas["updates"])
        self.lowest_reward = enas["lowest_reward"]
        self._decisions = {k: [list(d) for d in v] for k, v in enas["trial_decisions"].items()}
        self._pending = [list(p) for p in enas["pending"]]
        self._rewarded = set(enas["rewarded"])
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = enas["rng"]


def _write_json_atomically(path, state):
    """keras-tuner rewrites its JSON files in place: a chief killed while writing leaves a
    truncated file that no restart can read. Local files are written whole, then renamed."""
    if "://" in str(path):  # a remote file system (gs://...): tf.io.gfile writes it
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(json.dumps(state))
        return
    write_json_atomically(path, state)
