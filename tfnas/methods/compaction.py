"""Compaction from a baseline (Shafiee et al., 2020): train the baseline, let an algorithm
choose the channels to keep under a FLOPs target, cut them out (channel surgery).

The space is a baseline's channel widths (`tfnas.spaces.widths.WidthSpace`,
e.g. `cifar_resnet`); the architecture document records the width of every
channel group, and training fine-tunes the cut network from its surviving
weights (`train.inherit`). Algorithms are modules of `tfnas.compaction`
(`search.algorithm`, with their keys under `search.<algorithm>`).
"""

import os

import keras

from tfnas import data as data_lib
from tfnas import schema
from tfnas.architecture import Architecture, from_choices
from tfnas.backup import TrainingBackup
from tfnas.distribute import synchronize_batch_norms
from tfnas.compaction import ALGORITHMS, channel_graph, channel_groups
from tfnas.errors import ConfigError
from tfnas.macs import count_macs
from tfnas.methods.base import SearchMethod, prefixed, register_method
from tfnas.optimizers import check_learning_rate, make_optimizer
from tfnas.spaces.widths import WidthSpace

BASELINE_WEIGHTS = os.path.join("checkpoints", "baseline.weights.h5")
COMPACT_WEIGHTS = os.path.join("checkpoints", "compact.weights.h5")


class Session:
    """What an algorithm's `compact` works with: the baseline's channel graph and groups,
    the target, and `fit` (a backed-up, resumable training stage of the run)."""

    def __init__(self, method, run, network, verbose):
        self.method, self.run, self.verbose = method, run, verbose
        self.graph = channel_graph(network)
        self.groups = [g for g in self.graph.groups() if not g.fixed]
        self.baseline_macs = count_macs(network)
        self.target_macs = method.section["target"] * self.baseline_macs
        self.tolerance = method.section["tolerance"]
        self.seed = method.config["seed"]
        self.examples = method.prepared.splits.sizes["train"]  # an ELBO's data term
        self.loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.backups = []

    def fit(self, model, epochs, stage):
        """Trains `model` (a Keras model or a wrapper of the network) for `epochs` on the
        training split, as stage `stage`: logged to `logs/<stage>_history.csv`, backed up
        every epoch, continued where an interrupted run left it."""
        prepared = self.method.prepared
        steps = prepared.steps("train")
        model.compile(optimizer=make_optimizer(self.method.section["optimizer"],
                                               max(1, epochs * steps)),
                      loss=self.loss, metrics=["accuracy"])
        history = self.run.file("logs", f"{stage}_history.csv")
        backup = TrainingBackup(self.run.file("checkpoints", f"search_{stage}"),
                                csv_logs={history: 0})
        self.backups.append(backup)
        synchronize_batch_norms(model)
        initial = backup.restore(model)
        if initial:
            print(f"Resuming {self.run.path}: {stage} continues from epoch {initial + 1}.")
        if epochs > initial:
            print(f"== {stage}: {epochs} epochs on {prepared.splits.sizes['train']} images")
            model.fit(data_lib.epochs(lambda e: prepared.batches("train", True, e), initial,
                                      epochs),
                      epochs=epochs, initial_epoch=initial, steps_per_epoch=steps,
                      callbacks=[keras.callbacks.CSVLogger(history, append=True), backup],
                      shuffle=False, verbose=self.verbose)
        return model

    def max_width(self, group):
        """The widest `group` may grow: the space's largest candidate width."""
        return self.method.space.candidates(group)[-1]

    def probe_batches(self, n):
        """The first `n` batches of the validation split (the same ones on every call)."""
        return self.method.prepared.batches("val", False).take(n)

    def evaluate(self, network):
        network.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        metrics=["accuracy"])
        result = network.evaluate(self.method.prepared.batches("val", False), verbose=0,
                                  return_dict=True)
        return float(result["accuracy"])


@register_method
class CompactionSearch(SearchMethod):
    """`search.method: "compaction"`."""

    name = "compaction"
    defaults = {
        "algorithm": "group_lasso",
        "target": 1 / 3,          # the FLOPs target, a fraction of the baseline's (seed: 1/3)
        "tolerance": 0.02,        # the network lands in [(1 - tolerance) * target, target]
        "baseline_epochs": 10,    # trains the baseline first ...
        "baseline_weights": None,  # ... unless given its trained weights (.weights.h5)
        "optimizer": {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9,
                      "weight_decay": 1e-4, "schedule": "cosine"},
        **{name: dict(ALGORITHMS.resolve(name).defaults) for name in ALGORITHMS.names()},
    }
    open_keys = ("optimizer",)
    schema = {
        "algorithm": {"enum": ALGORITHMS.names()},
        "target": schema.number(exclusive_minimum=0, exclusive_maximum=1),
        "tolerance": schema.number(exclusive_minimum=0, exclusive_maximum=1),
        "baseline_epochs": schema.integer(0),
        "baseline_weights": {"type": ["string", "null"]},
        "optimizer": schema.OPEN,
        **{name: schema.obj(ALGORITHMS.resolve(name).schema) for name in ALGORITHMS.names()},
    }
    hints = {"target": "the FLOPs target is a fraction of the baseline's FLOPs, e.g. 0.3333"}

    @classmethod
    def check_section(cls, section):
        check_learning_rate("search.optimizer", section["optimizer"])
        if not section["baseline_epochs"] and not section["baseline_weights"]:
            raise ConfigError("search.baseline_epochs is 0 and search.baseline_weights is not "
                              "set: compaction needs a trained baseline; give one or the "
                              "epochs to train it.")

    def __init__(self, config, prepared):
        super().__init__(config, prepared)
        if not isinstance(self.space, WidthSpace):
            raise ConfigError(f"search.method 'compaction' resizes a baseline's channel groups; "
                              f"space {self.space.name!r} is not a space of widths. Use "
                              "space 'cifar_resnet', or 'keras_model' with a .keras file.")
        prefixed("search.optimizer", make_optimizer, self.section["optimizer"], 1)
        path = self.section["baseline_weights"]
        if path and not os.path.exists(path):
            raise ConfigError(f"search.baseline_weights: {path} does not exist.")
        self.algorithm = ALGORITHMS.resolve(self.section["algorithm"])(
            self.section[self.section["algorithm"]])

    def search(self, run, verbose=2):
        s = self.section
        network = self.space.build_baseline()
        session = Session(self, run, network, verbose)
        print(f"== compaction ({s['algorithm']}): {self.space.name} baseline, "
              f"{session.baseline_macs * 2 / 1e6:.3f} MFLOPs, target "
              f"{session.target_macs * 2 / 1e6:.3f} MFLOPs, {len(session.groups)} channel groups")
        if s["baseline_weights"]:
            network.load_weights(s["baseline_weights"])
        else:  # restored, not retrained, when a resumed run had finished it
            session.fit(network, s["baseline_epochs"], "baseline")
            # Another algorithm can start from it: search.baseline_weights.
            network.save_weights(run.file(BASELINE_WEIGHTS), overwrite=True)
        baseline_accuracy = session.evaluate(network)
        compact, macs = self.algorithm.compact(network, session)
        compact.save_weights(run.file(COMPACT_WEIGHTS), overwrite=True)
        widths = {g.name: g.width for g in channel_groups(compact) if not g.fixed}
        arch = from_choices(self.space, widths, metadata={
            "method": self.name, "algorithm": s["algorithm"], "dataset":
            self.config["data"]["dataset"],
            "search_seconds": round(sum(b.elapsed() for b in session.backups), 1),
            "baseline_macs": session.baseline_macs, "target_macs": session.target_macs,
            "macs": macs, "target_error": macs / session.target_macs - 1,
            "baseline_val_accuracy": baseline_accuracy,
            "cut_val_accuracy": session.evaluate(compact)})
        print(f"compacted: {macs * 2 / 1e6:.3f} MFLOPs "
              f"({100 * (macs / session.target_macs - 1):+.2f} % of the target)")
        for backup in session.backups:
            backup.discard()
        return arch, compact

    def load(self, run_path):
        """The cut network of a finished compaction run, with its surviving weights."""
        path = os.path.join(run_path, COMPACT_WEIGHTS)
        arch_path = os.path.join(run_path, "architecture.json")
        if not (os.path.exists(path) and os.path.exists(arch_path)):
            raise ConfigError(f"{run_path} is not a finished compaction run (it lacks "
                              f"{COMPACT_WEIGHTS} or architecture.json).")
        arch = Architecture.load(arch_path)
        model = arch.search_space().build_model(arch.choices)
        model.load_weights(path)
        return model

    def inherit(self, searched, architecture, model):
        if searched is None:
            return False
        model.set_weights(searched.get_weights())
        return True
