"""Runs on one replica, then on two (MirroredStrategy over two logical CPUs), in one
process, and writes what each gave as JSON. Group `searches`: a search with retraining, and
a compaction (tests/test_distribute.py); group `methods`: DCA-NAS (rematerialized on two
replicas), ENAS, binary-gate and keras-tuner searches (tests/test_distribute_methods.py).
Two groups, so that the suite's two workers share them.

    python tests/distributed_runs.py OUT_DIR {searches,methods} KEY=VALUE ...
"""

import csv
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfnas import pipeline  # noqa: E402
from tfnas.config import load_config  # noqa: E402
from tfnas.distribute import DistributionError  # noqa: E402
from tfnas.run_dir import RunDirectory  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# Compaction: a ResNet-8 baseline trained one epoch, one epoch of group lasso, the cut.
COMPACTION = ["space.config.depth=8", "search.baseline_epochs=1", "search.group_lasso.epochs=1",
              "data.limit=64", "data.batch_size=32"]
# Searches that run one path per step: ENAS (4 trials), binary gates (2 epochs); and ENAS
# with the function-call form, which is refused on two replicas.
ENAS = ["search.method=enas", "search.trials=4", "search.child_steps=2"]
BINARY = ['search.mixing={"type": "binary"}', "search.epochs=2", "search.warmup_epochs=0"]
# DCA-NAS's Lagrangian budget (softmax mixing, parameter cost) on the one-block space, one
# weight and one architecture step (a longer search drifts by float differences, a few 1e-4
# after 8 steps). The budget lies inside the block's range (790 to 844 parameters) and under
# the expected cost at the start, so the multiplier rises. NAS-Bench-201 cells took 86 s of
# the group's 167 s here, for the same code path (rematerialized MixedOps, multiplier step).
DCA = ["data.limit=32", "search.epochs=1", "search.warmup_epochs=0", "search.mixing=softmax",
       'search.cost={"type": "parameters"}',
       'search.penalty={"type": "lagrangian", "budget": 800, "rate": 0.5}']
# keras-tuner trials: two random architectures, one epoch each.
TUNER = ["search.method=tuner", 'search.tuner={"type": "random", "max_trials": 2}',
         "search.trial_epochs=1"]


def _write(out, results):
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f)


def searches(out, overrides):
    results = {}
    for strategy in ("null", "mirrored"):
        config = load_config(os.path.join(ROOT, "configs", "quickstart.json"), overrides + [
            "distribute.logical_cpus=2", f"distribute.strategy={strategy}"])
        run = RunDirectory(os.path.join(out, strategy))
        prepared = pipeline.prepare(config)
        arch, searched = pipeline.search(config, run, verbose=0, prepared=prepared)
        _, summary = pipeline.train(config, run, arch, searched, verbose=0, prepared=prepared)
        results[strategy] = {
            "choices": arch.choices, "probabilities": arch.probabilities,
            "search_history": _rows(run.file("logs", "search_history.csv")),
            "train_history": _rows(run.file("logs", "train_history.csv")),
            "test_loss": summary["test_loss"]}
        config = load_config(os.path.join(ROOT, "configs", "compact_resnet32_group_lasso.json"),
                             COMPACTION + ["distribute.logical_cpus=2",
                                           f"distribute.strategy={strategy}"])
        run = RunDirectory(os.path.join(out, f"compaction_{strategy}"))
        arch, _ = pipeline.search(config, run, verbose=0, prepared=pipeline.prepare(config))
        results[f"compaction_{strategy}"] = {
            "choices": arch.choices, "macs": arch.metadata["macs"],
            "history": [_rows(run.file("logs", f"{stage}_history.csv"))
                        for stage in ("baseline", "group_lasso")]}
    _write(out, results)


def methods(out, overrides):
    results = {}
    for strategy in ("null", "mirrored"):
        # On two replicas rematerialized: each replica's thread traces its own architecture
        # step (tfnas.layers.mixing's per-thread flag), and the Lagrangian steps as on one.
        config = load_config(os.path.join(ROOT, "configs", "quickstart.json"), overrides + DCA + [
            "distribute.logical_cpus=2", f"distribute.strategy={strategy}",
            f"search.rematerialize={'true' if strategy == 'mirrored' else 'false'}"])
        run = RunDirectory(os.path.join(out, f"dca_{strategy}"))
        pipeline.search(config, run, verbose=0, prepared=pipeline.prepare(config))
        results[f"dca_{strategy}"] = _rows(run.file("logs", "search_history.csv"))
        for name, settings in (("enas", ENAS), ("binary", BINARY), ("tuner", TUNER)):
            config = load_config(os.path.join(ROOT, "configs", "quickstart.json"), overrides + [
                "distribute.logical_cpus=2", f"distribute.strategy={strategy}", *settings])
            run = RunDirectory(os.path.join(out, f"{name}_{strategy}"))
            arch, _ = pipeline.search(config, run, verbose=0, prepared=pipeline.prepare(config))
            results[f"{name}_{strategy}"] = {"choices": arch.choices,
                                             "probabilities": arch.probabilities}
            if name != "binary":
                with open(run.file("logs", "trials.json"), encoding="utf-8") as f:
                    results[f"{name}_{strategy}"]["trials"] = json.load(f)
    config = load_config(os.path.join(ROOT, "configs", "quickstart.json"), overrides + [
        "distribute.logical_cpus=2", "distribute.strategy=mirrored", *ENAS,
        "search.reproducible=true"])
    try:
        pipeline.search(config, RunDirectory(os.path.join(out, "enas_call")), verbose=0,
                        prepared=pipeline.prepare(config))
    except DistributionError as err:
        results["enas_call_refused"] = str(err)
    _write(out, results)


if __name__ == "__main__":
    {"searches": searches, "methods": methods}[sys.argv[2]](sys.argv[1], sys.argv[3:])
