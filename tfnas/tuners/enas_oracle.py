"""ENAS's controller as a keras-tuner Oracle."""

import math

import keras
import keras_tuner as kt
import numpy as np
from keras_tuner.engine import hyperparameters as hp_types

from tfnas.tuners.controller import Controller, decode, encode
from tfnas.tuners.decisions import choices_of as _choices_of
from tfnas.tuners.resumable import ResumableOracle
from tfnas.tuners.warm_start import first_untried


def _number(**limits):
    return {"type": "number", **limits}


# JSON Schema of the settings a config passes to `EnasOracle` (`search.controller`, the
# tuner method's `{"type": "enas", ...}`): types and ranges, checked before a run starts.
SETTINGS_SCHEMA = {
    "preset": {"enum": ["default", "released"]},
    "lstm_units": {"type": "integer", "minimum": 1},
    "tanh_constant": {"type": ["number", "null"], "exclusiveMinimum": 0},
    "op_tanh_reduce": _number(exclusiveMinimum=0),
    "input_decisions": {"type": ["array", "null"], "items": {"type": "string"}},
    "temperature": {"type": ["number", "null"], "exclusiveMinimum": 0},
    "entropy_weight": _number(minimum=0),
    "baseline_decay": _number(minimum=0, exclusiveMaximum=1),
    "initial_baseline": {"type": ["number", "null"]},
    "learning_rate": _number(exclusiveMinimum=0),
    "samples_per_update": {"type": "integer", "minimum": 1},
    "failed_reward": {"type": ["number", "null"]},
    "resample_seen": {"type": "integer", "minimum": 0},
    "pretrain_steps": {"type": "integer", "minimum": 0},
    "pretrain_learning_rate": _number(exclusiveMinimum=0),
    "max_retries_per_trial": {"type": "integer", "minimum": 0},
}


class _FromPreset:
    def __repr__(self):
        return "<from the preset>"


FROM_PRESET = _FromPreset()  # an argument left to the preset
# "released": the ENAS code's settings, made for tens of thousands of samples. "default":
# for budgets of a few hundred trials (see EnasOracle's docstring for what changes and why).
PRESETS = {
    "released": {"tanh_constant": 1.10, "op_tanh_reduce": 2.5, "baseline_decay": 0.99,
                 "initial_baseline": 0.0, "learning_rate": 0.0035, "samples_per_update": 10},
    "default": {"tanh_constant": 2.5, "op_tanh_reduce": 1.0, "baseline_decay": 0.99,
                "initial_baseline": None, "learning_rate": 0.05, "samples_per_update": 5},
}


def choices_of(hp):
    """`tfnas.tuners.decisions.choices_of` for the ENAS controller."""
    return _choices_of(hp, "EnasOracle")


class EnasOracle(ResumableOracle):
    """The ENAS controller (Pham et al., 2018) as a keras-tuner `Oracle`.

    An LSTM samples every decision of the search space in turn (each `hp.Choice`,
    `hp.Int`, `hp.Boolean`; inactive conditional ones are skipped), its input at
    each step the embedding of the previous decision. Each finished trial's
    objective is the reward (negated for objectives to minimize); every
    `samples_per_update` rewards the controller takes one REINFORCE step,
    `−log p(arc) · (R − b)` with a moving-average baseline `b`, by Adam (β1 = 0,
    ε = 1e-3), the sample's entropy times `entropy_weight` added to its reward.

    `preset="released"` takes the released ENAS settings (github melodyguan/enas):
    logits `1.10·tanh(l)` for input decisions and `1.10/2.5·tanh(l)` for
    operations, `b` starting at 0 and moving by 1 % a reward, learning rate
    0.0035, 10 architectures per update. They were made for tens of thousands
    of samples: an operation's probability cannot pass 0.375 of five choices
    (so the controller hardly concentrates), and with rewards such as
    accuracies every early advantage `R − b` is positive, so each step raises
    whatever was sampled. The default preset keeps the method and changes the
    numbers for budgets of hundreds of trials: logits `2.5·tanh(l)` for every
    decision, `b` starting at the first update's mean reward, learning rate
    0.05, 5 architectures per update (`benchmarks/enas_oracle.py`, and
    `tfnas race` on accuracy tables). Any argument given overrides its preset.

    `objective`, `max_trials`, `seed`, `hyperparameters`, `allow_new_entries`,
    `tune_new_entries`, `max_retries_per_trial` and `max_consecutive_failed_trials`
    are `keras_tuner.Oracle`'s.

    Args:
        preset: `"default"` or `"released"`: the values of the arguments left
            out among `tanh_constant`, `op_tanh_reduce`, `baseline_decay`,
            `initial_baseline`, `learning_rate` and `samples_per_update`.
        lstm_units: controller LSTM size.
        tanh_constant: `c` of the input decisions' logits `c·tanh(l/T)`; None
            for raw logits.
        op_tanh_reduce: the other decisions use `tanh_constant / op_tanh_reduce`.
        input_decisions: names of the decisions that pick an input (or a
            function of the name); by default those whose name ends in "input".
        temperature: `T` above, None for 1.
        entropy_weight: weight of the sample's entropy added to the reward.
        baseline_decay: the baseline keeps this fraction at each reward.
        initial_baseline: the baseline before the first reward; None: the mean
            reward of the first update (0, as released, leaves every early
            advantage positive for rewards such as accuracies).
        learning_rate: the controller's Adam learning rate.
        samples_per_update: rewards averaged in one controller step.
        failed_reward: the reward of a failed trial; None: the lowest reward
            seen so far (a failure before any reward teaches nothing).
        resample_seen: draws allowed to find an architecture not tried yet
            before a repeat is accepted (0: repeats are fine, as in ENAS).
        initial_values: architectures to start from, `[{name: value}, ...]`,
            best first (e.g. the best of many untrained ones by a zero-cost proxy,
            `search.warm_start`): before the first trial the controller is
            pre-trained toward them (at most `pretrain_steps` Adam steps at
            `pretrain_learning_rate` on their mean negative log-likelihood per
            decision, until their decisions' mean probability is one half), and
            the first trials take them in order (one already tried is skipped);
            their rewards teach the controller as its own samples' do.
        pretrain_steps: see `initial_values`.
        pretrain_learning_rate: see `initial_values`.
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
                 max_consecutive_failed_trials=3, preset="default", lstm_units=64,
                 tanh_constant=FROM_PRESET, op_tanh_reduce=FROM_PRESET, input_decisions=None,
                 temperature=None, entropy_weight=1e-4, baseline_decay=FROM_PRESET,
                 initial_baseline=FROM_PRESET, learning_rate=FROM_PRESET,
                 samples_per_update=FROM_PRESET, failed_reward=None,
                 resample_seen=20, initial_values=(), pretrain_steps=50,
                 pretrain_learning_rate=0.01, chief_timeout=600):
        super().__init__(chief_timeout=chief_timeout, objective=objective,
                         max_trials=max_trials, seed=seed, hyperparameters=hyperparameters,
                         allow_new_entries=allow_new_entries, tune_new_entries=tune_new_entries,
                         max_retries_per_trial=max_retries_per_trial,
                         max_consecutive_failed_trials=max_consecutive_failed_trials)
        if preset not in PRESETS:
            raise ValueError(f"EnasOracle: unknown preset {preset!r}; the presets are "
                             f"{sorted(PRESETS)}.")
        given = {"tanh_constant": tanh_constant, "op_tanh_reduce": op_tanh_reduce,
                 "baseline_decay": baseline_decay, "initial_baseline": initial_baseline,
                 "learning_rate": learning_rate, "samples_per_update": samples_per_update}
        settings = {k: PRESETS[preset][k] if v is FROM_PRESET else v for k, v in given.items()}
        self.preset = preset
        tanh_constant, op_tanh_reduce = settings["tanh_constant"], settings["op_tanh_reduce"]
        baseline_decay, initial_baseline = (settings["baseline_decay"],
                                            settings["initial_baseline"])
        learning_rate = settings["learning_rate"]
        samples_per_update = settings["samples_per_update"]
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
        self.initial_values = [dict(values) for values in initial_values]
        self.pretrain_steps = int(pretrain_steps)
        self.pretrain_learning_rate = float(pretrain_learning_rate)
        self.pretrained = False
        self._rng = np.random.default_rng(self.seed)
        self.controller = Controller(self.lstm_units, seed=self.seed)
        self._optimizer = None
        self._encoded_optimizer = None
        self.initial_baseline = initial_baseline
        self.baseline = None if initial_baseline is None else float(initial_baseline)
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

    def _indices(self, values, decisions):
        """The decisions `[[name, index], ...]` that give `values` (the controller's path
        through the space's active hyperparameters)."""
        hps = kt.HyperParameters()
        path = []
        for hp in self.hyperparameters.space:
            hps.merge([hp])
            if not hps.is_active(hp):
                continue
            value = values.get(hp.name, hp.default)
            hps.values[hp.name] = value
            if hp.name in decisions:
                if value not in decisions[hp.name]:
                    raise ValueError(f"EnasOracle: initial value {value!r} of {hp.name!r} is "
                                     f"not one of its choices {decisions[hp.name]}.")
                path.append([hp.name, decisions[hp.name].index(value)])
        return path

    def _pretrain(self, decisions):
        """Maximum likelihood of `initial_values` under the controller, until their
        decisions' mean probability (geometric) reaches one half: a prior from the warm
        start that leaves room to explore (a controller sure of them would only repeat
        them), which the rewards then correct."""
        paths = [self._indices(values, decisions) for values in self.initial_values]
        constants = self._tanh_constants()
        optimizer = keras.optimizers.Adam(self.pretrain_learning_rate)
        optimizer.build(self.controller.variables)
        per_decision = [1.0 / max(1, len(path)) for path in paths]
        for _ in range(self.pretrain_steps):
            log_probs, _ = self.controller.log_probs_and_entropies(paths, constants,
                                                                   self.temperature)
            if -float(np.mean(log_probs * per_decision)) <= math.log(2.0):
                break
            self.controller.minimize(optimizer, paths, per_decision, constants,
                                     self.temperature)
        self.pretrained = True

    def populate_space(self, trial_id):
        decisions = self._decisions_of_space()
        if self.initial_values:
            if not self.pretrained:
                self._pretrain(decisions)
            values = first_untried(self, self.initial_values)
            if values is not None:
                self._decisions[trial_id] = self._indices(values, decisions)
                return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": values}
        for _ in range(self.resample_seen + 1):
            values, sampled = self._sample(decisions)
            if not self._duplicate(values):
                break
        self._decisions[trial_id] = sampled
        return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": values}

    # -- learning --------------------------------------------------------------------------
    def learn(self, trial):
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
        self._encoded_optimizer = None
        self._optimizer_size = len(self.controller.variables)

    def _update(self):
        """One REINFORCE step on the pending rewards (the released ENAS loss)."""
        constants = self._tanh_constants()
        variables = self.controller.variables
        if self._optimizer is None or self._optimizer_size != len(variables):
            iterations = 0 if self._optimizer is None else int(self._optimizer.iterations)
            self._build_optimizer()  # a grown space restarts the moments, not the count
            self._optimizer.iterations.assign(iterations)
        paths = [self._decisions[trial_id] for trial_id, _ in self._pending]
        _, entropies = self.controller.log_probs_and_entropies(paths, constants,
                                                               self.temperature)
        if self.baseline is None:  # starts where the rewards are, not at 0
            self.baseline = float(np.mean([reward for _, reward in self._pending]))
        advantages = []
        for (_, reward), entropy in zip(self._pending, entropies):
            reward = reward + self.entropy_weight * float(entropy)
            self.baseline -= (1.0 - self.baseline_decay) * (self.baseline - reward)
            advantages.append(reward - self.baseline)
        self.controller.minimize(self._optimizer, paths, advantages, constants,
                                 self.temperature)
        self._encoded_optimizer = None
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
    def get_state(self):
        state = super().get_state()
        if self._optimizer is not None and self._encoded_optimizer is None:
            self._encoded_optimizer = [encode(v) for v in self._optimizer.variables]
        optimizer = None if self._optimizer is None else self._encoded_optimizer
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
            "pretrained": self.pretrained,
            "rng": self._rng.bit_generator.state,
        }
        return state

    def set_state(self, state):
        super().set_state(state)
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
            self._encoded_optimizer = None
        self.baseline = None if enas["baseline"] is None else float(enas["baseline"])
        self.samples, self.updates = int(enas["samples"]), int(enas["updates"])
        self.lowest_reward = enas["lowest_reward"]
        self._decisions = {k: [list(d) for d in v] for k, v in enas["trial_decisions"].items()}
        self._pending = [list(p) for p in enas["pending"]]
        self._rewarded = set(enas["rewarded"])
        self.pretrained = bool(enas.get("pretrained", False))
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = enas["rng"]
