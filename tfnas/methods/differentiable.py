"""Differentiable search: a supernet of mixed ops, trained with `SearchModel` in `fit()`.

GRUNAS (Gumbel-softmax over group counts), DARTS/SNAS/GDAS (softmax, Gumbel,
hard Gumbel) and ProxylessNAS (binary gates) are this method with a mixing
rule, a cost and a penalty. The mixing rule brings its own schedule
callbacks (the Gumbel temperature).
"""

import os

import keras

from tfnas import data as data_lib
from tfnas import budget, penalties, perturbation, schema
from tfnas.architecture import Architecture
from tfnas.backup import TrainingBackup
from tfnas.callbacks import ArchitectureLogger, ConvergenceStop
from tfnas.costs import COSTS
from tfnas.errors import ConfigError
from tfnas.layers import mixing as mixing_rules
from tfnas.methods.base import SupernetMethod, prefixed, register_method
from tfnas.optimizers import check_learning_rate, make_optimizer
from tfnas.search_model import SearchModel


@register_method
class DifferentiableSearch(SupernetMethod):
    """`search.method: "differentiable"` (the default)."""

    name = "differentiable"
    defaults = {
        "epochs": 100,
        "warmup_epochs": 20,
        "alternation": "epoch",  # "epoch" (GRUNAS reference) or "step" (DARTS)
        "arch_every": 1,         # "step": weight steps per architecture step (ProxylessNAS code: 5)
        # a rule name or {"type": ..., its arguments}: "gumbel"/"gumbel_hard" take a
        # temperature schedule {"initial", "rate", "minimum"}
        "mixing": {"type": "gumbel", "temperature": {"initial": 5.0, "rate": "code",
                                                     "minimum": 0.0}},
        "penalty": {"type": "threshold", "beta": 0.8, "threshold": 10 ** 5.5},
        # what the penalty weighs: "parameters", "macs", or "latency" with "table": a
        # latency table (tfnas latency-table) of this space, and "unit": "ms" or "us"
        "cost": {"type": "parameters"},
        # stop when the derived architecture is unchanged for `patience` epochs and the mean
        # normalized entropy is below `entropy_threshold`; patience 0 turns it off
        "convergence": {"patience": 0, "entropy_threshold": 0.5},
        "plot_blocks": None,     # blocks drawn alone in logs/architecture_blocks.png
        # recompute the mixed ops' activations in the backward pass instead of keeping them:
        # less memory per step, one more forward pass of compute (SearchModel)
        "rematerialize": False,
        "optimizer": {"name": "sgd", "learning_rate": 0.08, "momentum": 0.95,
                      "weight_decay": 1e-4, "schedule": "cosine"},
        "arch_optimizer": {"name": "adam", "learning_rate": 0.01, "weight_decay": 5e-4},
        # how the architecture is read off the searched supernet: "argmax" (the most
        # probable candidates) or "perturbation" (tfnas.perturbation: keep the candidate
        # whose removal lowers `measure` most; "accuracy" on `batches` validation batches
        # is DARTS-PT, a zero-cost proxy on one training batch is Zero-Cost-PT)
        "selection": {"type": "argmax", "measure": "accuracy", "batches": 4},
    }
    open_keys = ("mixing", "penalty", "cost", "optimizer", "arch_optimizer")
    schema = {
        "epochs": schema.integer(1),
        "warmup_epochs": schema.integer(0),
        "alternation": {"enum": ["epoch", "step"]},
        "arch_every": schema.integer(1),
        "mixing": schema.NAMED,
        "penalty": schema.NAMED,
        "cost": schema.NAMED,
        "convergence": schema.obj({
            "patience": schema.integer(0),
            "entropy_threshold": schema.number(exclusive_minimum=0, maximum=1)}),
        "plot_blocks": {"type": ["array", "null"], "items": {"type": "string"}},
        "rematerialize": schema.BOOLEAN,
        "optimizer": schema.OPEN,
        "arch_optimizer": schema.OPEN,
        "selection": schema.obj({
            "type": {"enum": ["argmax", "perturbation"]},
            "measure": {"enum": list(perturbation.MEASURES)},
            "batches": schema.integer(1)}),
    }
    hints = {"epochs": "a search needs at least one epoch",
             "temperature": "The temperature belongs to the mixing rule now: "
                            "\"mixing\": {\"type\": \"gumbel\", \"temperature\": "
                            "{\"initial\": 5.0, \"rate\": \"code\"}}"}

    @classmethod
    def check_section(cls, section):
        if section["warmup_epochs"] >= section["epochs"]:
            raise ConfigError(
                f"search.warmup_epochs ({section['warmup_epochs']}) must be less than "
                f"search.epochs ({section['epochs']}): otherwise no architecture step ever "
                "runs.")
        for key in ("optimizer", "arch_optimizer"):
            check_learning_rate(f"search.{key}", section[key])

    def __init__(self, config, prepared):
        super().__init__(config, prepared)
        s = self.section
        # Everything a config can get wrong is built here, before a run writes anything.
        self.penalty = prefixed("search.penalty", penalties.get, s["penalty"])
        for key in ("optimizer", "arch_optimizer"):
            prefixed(f"search.{key}", make_optimizer, s[key], 1)
        prefixed("search.mixing", self.mixing_rule)
        _, arguments = prefixed("search.cost", COSTS.check, s["cost"], space=None)
        if "table" in arguments:  # read it now: a missing table is an input error
            from tfnas.deploy.latency import load_table  # pylint: disable=import-outside-toplevel

            load_table(arguments["table"])
        # A budget no network meets is an input error too; the cost built to check it is
        # the search's (costs counted on derived models are slow to build twice).
        self._cost = None
        if self.penalty.checks_cost:
            self._cost = self.check_cost(self.penalty)
            limits = self.penalty.derivation_limits()
            if limits is not None:  # checked once: the search's penalty has the same limits
                prefixed("search.penalty", self._check_derivable, self._cost, limits,
                         self.penalty.tolerance)

    def check_cost(self, penalty, supernet=None):
        """The cost model of the search, checked by `penalty` against the space."""
        cost = self._cost or prefixed("search.cost", COSTS.get, self.section["cost"],
                                      space=self.space, supernet=supernet)
        prefixed("search.penalty", penalty.check_cost, cost, *self.space.cost_range(cost))
        return cost

    def _check_derivable(self, cost, limits, tolerance):
        """A tolerance window that no architecture's cost falls in cannot be met (the
        derivation would fall back to the nearest cost under it): an input error that names
        the nearest costs there are."""
        costs = budget.reachable_costs(self.space.cost_groups(cost), fixed=cost.fixed)
        low, high = limits
        if any(low <= c <= high for c in costs):
            return
        below = [f"{c:,.0f} below" for c in costs if c < low][-1:]
        above = [f"{c:,.0f} above" for c in costs if c > high][:1]
        nearest = " and ".join(below + above)
        raise ConfigError(
            f"no architecture of the {self.space.name} space costs within the "
            f"tolerance, {low:,.0f} to {high:,.0f} {cost.unit} (budget {high:,.0f}, tolerance "
            f"{tolerance:g}); the nearest costs are {nearest}. Set the budget to a cost the "
            "space has, or widen the tolerance.")

    def mixing_rule(self):
        return mixing_rules.get(self.section["mixing"], seed=self.config["seed"])

    def build_supernet(self):
        return self.space.build_supernet(self.mixing_rule())

    def build_search_model(self):
        supernet = self.build_supernet()
        penalty = penalties.get(self.section["penalty"])
        return SearchModel(supernet, cost=self.check_cost(penalty, supernet), penalty=penalty,
                           rematerialize=self.section["rematerialize"])

    def search(self, run, verbose=2):
        s, prepared = self.section, self.prepared
        model = self.build_search_model()
        n_train, n_val = prepared.steps("train"), prepared.steps("val")
        arch_per_epoch = n_train // s["arch_every"] if s["alternation"] == "step" else n_val
        arch_steps = max(1, (s["epochs"] - s["warmup_epochs"]) * arch_per_epoch)
        model.compile(optimizer=make_optimizer(s["optimizer"], s["epochs"] * n_train),
                      arch_optimizer=make_optimizer(s["arch_optimizer"], arch_steps))
        logger = ArchitectureLogger(run.file("logs"), plot_blocks=s["plot_blocks"])
        callbacks = model.schedule_callbacks(start_epoch=s["warmup_epochs"])
        callbacks += model.penalty.callbacks(
            lambda: (model.expected_cost(), model.derived_cost(self.space)))
        callbacks.append(logger)
        stop = None
        if s["convergence"]["patience"]:
            stop = ConvergenceStop(s["convergence"]["patience"],
                                   s["convergence"]["entropy_threshold"])
            callbacks.append(stop)
        history = run.file("logs", "search_history.csv")
        backup = TrainingBackup(run.file("checkpoints", "search"),
                                stateful={"convergence": stop} if stop else None,
                                csv_logs={history: 0, logger.csv_path: 1})
        callbacks += [keras.callbacks.CSVLogger(history, append=True), backup]
        print(f"== search: {s['epochs']} epochs ({s['warmup_epochs']} weights only), "
              f"{self.space.name} space with {len(self.space.blocks())} blocks, "
              f"{prepared.splits.sizes['train']} + {prepared.splits.sizes['val']} images")
        initial_epoch = backup.restore(model)
        if initial_epoch:
            print(f"Resuming {run.path}: the search continues from epoch {initial_epoch + 1}.")
        steps = (n_train + n_train // s["arch_every"] if s["alternation"] == "step"
                 else n_train + n_val)

        def epoch_batches(epoch):
            return data_lib.search_schedule(prepared.batches("train", True, epoch),
                                            prepared.batches("val", True, epoch),
                                            alternation=s["alternation"],
                                            arch_every=s["arch_every"])

        last = initial_epoch if backup.finished else s["epochs"]
        model.fit(data_lib.epochs(epoch_batches, initial_epoch, max(last, initial_epoch + 1)),
                  warmup_epochs=s["warmup_epochs"], epochs=last, initial_epoch=initial_epoch,
                  steps_per_epoch=steps, callbacks=callbacks, verbose=verbose)
        scores, selection = self.perturbation_scores(model.supernet, verbose)
        arch = model.derive_architecture(
            self.space, limits=model.penalty.derivation_limits(), scores=scores, metadata={
                "method": self.name, "search_seconds": round(backup.elapsed(), 1),
                "dataset": self.config["data"]["dataset"], "epochs": s["epochs"],
                "penalty": model.penalty.get_config(), "expected_cost": model.expected_cost(),
                "cost_unit": model.cost.unit,
                "converged_epoch": stop.stopped_epoch if stop else None,
                "selection": selection})
        arch.metadata["derived_cost"] = model.derived_cost(self.space, arch.choices)
        model.supernet.save_weights(run.file("checkpoints", "supernet.weights.h5"),
                                    overwrite=True)
        backup.discard()
        return arch, model.supernet

    def perturbation_scores(self, supernet, verbose=2):
        """`(scores, selection)`: with `selection.type` "perturbation", the candidates' scores
        by `tfnas.perturbation.select` and what it decided; otherwise `(None, {"type":
        "argmax"})`, the supernet's probabilities deciding."""
        settings = self.section["selection"]
        if settings["type"] == "argmax":
            return None, {"type": "argmax"}
        measure_name = settings["measure"]
        if measure_name == "accuracy":
            batches = list(self.prepared.batches("val", False).take(settings["batches"]))
            measure = perturbation.accuracy_measure(supernet, batches)
        else:
            images, labels = next(iter(self.prepared.batches("train", True, epoch=0)))
            measure = perturbation.proxy_measure(supernet, images.numpy(), labels.numpy(),
                                                 measure_name)
        print(f"== selection: perturbation by {measure_name}, "
              f"{len(perturbation.decision_blocks(supernet))} decisions")
        scores, decisions = perturbation.select(supernet, measure, seed=self.config["seed"],
                                                log=print if verbose else None)
        return scores, {"type": "perturbation", "measure": measure_name,
                        "decisions": decisions}

    def load(self, run_path):
        """The supernet of a finished search run, with its weights."""
        path = os.path.join(run_path, "checkpoints", "supernet.weights.h5")
        arch_path = os.path.join(run_path, "architecture.json")
        if not (os.path.exists(path) and os.path.exists(arch_path)):
            missing = ("checkpoints/supernet.weights.h5" if not os.path.exists(path)
                       else "architecture.json")
            raise ConfigError(f"{run_path} is not a finished search run (it lacks {missing}): "
                              "point --inherit_from at a search run directory, or train from "
                              "scratch with --set train.inherit=false.")
        supernet = Architecture.load(arch_path).search_space().build_supernet(
            self.mixing_rule())
        try:
            supernet.load_weights(path)
        except Exception as err:  # pylint: disable=broad-except
            raise ConfigError(f"Cannot load the supernet weights {path} ({type(err).__name__}: "
                              f"{str(err)[:200]}); the search run was made with another config "
                              "or its file is damaged.") from None
        return supernet
