"""ENAS: the controller samples architectures, one shared supernet trains them.

Pham et al., "Efficient Neural Architecture Search via Parameter Sharing",
ICML 2018. The controller is `tfnas.tuners.EnasOracle` and the search is a
keras-tuner search, so trials, logs and resume are keras-tuner's. Each trial
is one sampled architecture: the supernet (built with the `"chosen"` mixing
rule) runs that path for `child_steps` weight steps on training batches, in
one traced step for every architecture, and its accuracy on one validation
batch is the reward (github melodyguan/enas). The derived architecture is the
controller's most probable one. Unlike the released code, child steps and
controller samples interleave (one trial = child steps + one reward) instead
of alternating whole phases.
"""

import os
import time

import keras
import numpy as np

from tfnas import data as data_lib
from tfnas import schema
from tfnas.architecture import Architecture, from_choices
from tfnas.distribute import check_replicable, synchronize_batch_norms
from tfnas.errors import ConfigError
from tfnas.layers.chosen_path import set_path
from tfnas.methods.base import SupernetMethod, prefixed, register_method
from tfnas.optimizers import check_learning_rate, make_optimizer
from tfnas.search_model import WEIGHTS, SearchModel
from tfnas.tuners.enas_oracle import SETTINGS_SCHEMA


@register_method
class EnasSearch(SupernetMethod):
    """`search.method: "enas"`: ENAS weight sharing over any tfnas space."""

    name = "enas"
    defaults = {
        "trials": 300,           # architectures the controller samples (keras-tuner trials)
        "child_steps": 10,       # weight steps of the shared supernet per sampled architecture
        "controller": {},        # EnasOracle arguments ("preset": "released" for ENAS's own)
        # true: each mixed op's chosen candidate runs as a function call, not the faster
        # lowered switch (tfnas.layers.mixing.run_candidate); both are exact with
        # "deterministic": true
        "reproducible": False,
        "optimizer": {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9,
                      "weight_decay": 1e-4, "schedule": "cosine"},
    }
    open_keys = ("controller", "optimizer")
    schema = {
        "trials": schema.integer(1),
        "child_steps": schema.integer(1),
        "controller": {"type": "object", "properties": SETTINGS_SCHEMA},
        "reproducible": schema.BOOLEAN,
        "optimizer": schema.OPEN,
    }
    hints = {"trials": "the controller needs at least one sampled architecture"}

    @classmethod
    def check_section(cls, section):
        check_learning_rate("search.optimizer", section["optimizer"])

    def __init__(self, config, prepared):
        super().__init__(config, prepared)
        import inspect  # pylint: disable=import-outside-toplevel

        from tfnas.tuners import EnasOracle  # pylint: disable=import-outside-toplevel

        settings = set(inspect.signature(EnasOracle).parameters) - {
            "objective", "max_trials", "seed", "hyperparameters", "allow_new_entries",
            "tune_new_entries", "chief_timeout", "max_consecutive_failed_trials"}
        unknown = sorted(set(self.section["controller"]) - settings)
        if unknown:
            raise ConfigError(f"search.controller: unknown keys {unknown}; EnasOracle takes "
                              f"{sorted(settings)}.")
        prefixed("search.optimizer", make_optimizer, self.section["optimizer"], 1)
        try:
            EnasOracle(objective="val_accuracy", **self.section["controller"])
        except (ValueError, TypeError) as err:
            raise ConfigError(f"search.controller: {err}") from None

    # -- the pieces -------------------------------------------------------------------------
    def _search_model(self):
        keras.utils.set_random_seed(self.config["seed"])
        supernet = self.space.build_supernet(mixing=self._mixing())
        model = SearchModel(supernet)
        total = self.section["trials"] * self.section["child_steps"]
        model.compile(optimizer=make_optimizer(self.section["optimizer"], total),
                      arch_optimizer="adam")
        return model

    def _mixing(self):
        return {"type": "chosen", "reproducible": self.section["reproducible"]}

    def _tuner(self, run_path, model, overwrite=False):
        import keras_tuner as kt  # pylint: disable=import-outside-toplevel

        from tfnas.tuners import EnasOracle  # pylint: disable=import-outside-toplevel
        from tfnas.tuners.resumable import ResumableTuner  # pylint: disable=import-outside-toplevel

        method = self

        class SharedWeightsTuner(ResumableTuner):
            """Runs each trial's architecture on the shared supernet (not a model per
            trial); the supernet and its optimizer are saved after every trial."""

            def run_trial(self, trial, *args, **kwargs):
                return {"val_accuracy": method._child_and_reward(
                    model, trial.hyperparameters, len(self.oracle.end_order))}

            def on_trial_end(self, trial):
                super().on_trial_end(trial)
                method._save(run_path, model, len(self.oracle.end_order))

        class Space(kt.HyperModel):
            def build(self, hp):
                method.space.hyperparameters(hp)

        # A trial here cannot be infeasible: a failure is a bug, raised at once.
        oracle = EnasOracle(objective="val_accuracy", max_trials=self.section["trials"],
                            seed=self.config["seed"], max_consecutive_failed_trials=1,
                            **self.section["controller"])
        return SharedWeightsTuner(oracle=oracle, hypermodel=Space(), overwrite=overwrite,
                                  directory=os.path.join(run_path, "checkpoints"),
                                  project_name="enas")

    def _streams(self, model, done):
        """The training batches from child step `done` on, and the validation batches."""
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        per_epoch = self.prepared.steps("train")
        first, offset = divmod(done, per_epoch)
        # The phase per example, so that a strategy can split the batch across replicas.
        train = data_lib.epochs(
            lambda e: self.prepared.batches("train", True, epoch=e).map(data_lib.as_written(
                lambda x, y: (x, y, tf.fill(tf.shape(y)[:1], WEIGHTS)))),
            first, 10 ** 6).skip(offset)
        strategy = tf.distribute.get_strategy()
        self._train = iter(strategy.experimental_distribute_dataset(train))
        self._val = list(self.prepared.batches("val", False))
        if not hasattr(self, "_step"):
            check_replicable(model.supernet)
            synchronize_batch_norms(model.supernet)
            # Traced once each: the path lives in variables, so no architecture retraces,
            # and the batch dimension is open, so an epoch's short last batch does not either.
            self._step = tf.function(
                lambda data: strategy.run(model.train_step, args=(data,)),
                input_signature=[self._train.element_spec], autograph=False)
            # BatchNorm in training mode, as ENAS rewards: the shared statistics fit no path.
            val_images = self.prepared.batches("val", False).element_spec[0]
            self._logits = tf.function(lambda x: model.supernet(x, training=True)[0],
                                       input_signature=[val_images], autograph=False)

    def _child_and_reward(self, model, hp, trial_index):
        choices = self.space.hyperparameters(hp.copy())
        set_path(model.supernet, self.space.supernet_path(choices))
        for _ in range(self.section["child_steps"]):
            self._step(next(self._train))
        x, y = self._val[trial_index % len(self._val)]
        predicted = np.argmax(keras.ops.convert_to_numpy(self._logits(x)), -1)
        return float(np.mean(predicted == keras.ops.convert_to_numpy(y)))

    # -- checkpoints (written whole, then renamed) -----------------------------------------
    def _paths(self, run_path):
        """The per-trial state (supernet and optimizer variables and the count of trials they
        have trained, as one flat array file: Keras's layer-by-layer .h5 writer took 1.2-1.8 s
        per trial on the cell space), and the supernet in Keras's format, written once the
        search ends."""
        base = os.path.join(run_path, "checkpoints")
        return (os.path.join(base, "enas_state.npz"),
                os.path.join(base, "enas_supernet.weights.h5"))

    @staticmethod
    def _variables(model):
        return [*model.supernet.weights, *model.optimizer.variables]

    def _save(self, run_path, model, trials_done):
        # One file, renamed into place: the count cannot disagree with the weights it counts.
        state, _ = self._paths(run_path)
        with open(state + ".tmp", "wb") as f:
            np.savez(f, *[keras.ops.convert_to_numpy(v) for v in self._variables(model)],
                     trials_done=np.int64(trials_done))
        os.replace(state + ".tmp", state)

    def _restore(self, run_path, model, tuner):
        """The supernet and optimizer as they were after the last saved trial; trials the
        oracle ended after that save are replayed (the oracle has their rewards already), so
        a resumed search trains what an uninterrupted one would, bit for bit (with
        `deterministic`, the default)."""
        state, _ = self._paths(run_path)
        saved = 0
        if os.path.exists(state):
            variables = self._variables(model)
            with np.load(state) as stored:
                arrays = [stored[f"arr_{i}"] for i in range(len(stored.files) - 1)]
                if "trials_done" not in stored.files or \
                        [a.shape for a in arrays] != [tuple(v.shape) for v in variables]:
                    raise ConfigError(f"{state} holds {len(arrays)} arrays that do not fit "
                                      f"this search's {len(variables)} variables: it is from "
                                      "another space, settings or tfnas version; use a new "
                                      "--run_dir.")
                saved = int(stored["trials_done"])
                for v, value in zip(variables, arrays):
                    v.assign(value)
        self._streams(model, saved * self.section["child_steps"])
        for index, trial_id in enumerate(tuner.oracle.end_order[saved:], start=saved):
            # The reward's forward pass moves BatchNorm statistics too: replayed as well.
            self._child_and_reward(model, tuner.oracle.trials[trial_id].hyperparameters, index)

    # -- the method -------------------------------------------------------------------------
    def search(self, run, verbose=2):
        s = self.section
        start = time.time()
        model = self._search_model()
        tuner = self._tuner(run.path, model)
        self._restore(run.path, model, tuner)
        print(f"== search: ENAS, {s['trials']} sampled architectures of the "
              f"{len(self.space.blocks())} blocks of the {self.space.name} space, "
              f"{s['child_steps']} shared-weight steps each")
        if not self.config["deterministic"]:
            print("   note: deterministic is false: child steps can differ in the last bits "
                  "run to run, so a resumed or repeated search can drift from this one")
        tuner.search(verbose=min(verbose, 1))
        values = tuner.oracle.most_likely_values()
        import keras_tuner as kt  # pylint: disable=import-outside-toplevel

        hp = kt.HyperParameters()
        self.space.hyperparameters(hp)
        hp.values.update(values)
        choices = self.space.hyperparameters(hp)
        set_path(model.supernet, self.space.supernet_path(choices))
        correct = [np.argmax(keras.ops.convert_to_numpy(self._logits(x)), -1)
                   == keras.ops.convert_to_numpy(y) for x, y in self._val]
        trials = [{"trial": t.trial_id, "status": str(t.status), "reward": t.score,
                   "choices": self.space.hyperparameters(t.hyperparameters.copy())}
                  for t in sorted(tuner.oracle.trials.values(), key=lambda t: t.trial_id)]
        run.write_json(os.path.join("logs", "trials.json"), trials)
        _, weights = self._paths(run.path)
        model.supernet.save_weights(weights + ".tmp.weights.h5")
        os.replace(weights + ".tmp.weights.h5", weights)
        arch = from_choices(self.space, choices, metadata={
            "method": self.name, "trials": len(trials), "child_steps": s["child_steps"],
            "dataset": self.config["data"]["dataset"],
            "controller_updates": tuner.oracle.updates,
            "shared_weights_val_accuracy": float(np.mean(np.concatenate(correct))),
            # traces of the child step in this process: 1 however many paths it ran
            "child_step_traces": int(self._step.experimental_get_tracing_count()),
            "search_seconds": round(time.time() - start, 1)})
        return arch, model.supernet

    def load(self, run_path):
        """The shared supernet of a finished search (its weights), for train.inherit."""
        _, weights = self._paths(run_path)
        arch_path = os.path.join(run_path, "architecture.json")
        if not os.path.exists(weights) or not os.path.exists(arch_path):
            return None
        supernet = Architecture.load(arch_path).search_space().build_supernet(mixing="chosen")
        supernet.load_weights(weights)
        return supernet

