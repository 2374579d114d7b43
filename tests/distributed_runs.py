"""Searches, retrains and compacts on one replica, then on two (MirroredStrategy over two
logical CPUs), in one process, and tries an ENAS search on two; writes what each gave as JSON
(tests/test_distribute.py).

    python tests/distributed_runs.py OUT_DIR KEY=VALUE ...
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
# ENAS runs one path per step, which tf.distribute cannot replicate: refused, before a step.
ENAS = ["search.method=enas", "search.trials=4", "search.child_steps=2"]


def main(out, overrides):
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
    config = load_config(os.path.join(ROOT, "configs", "quickstart.json"), overrides + [
        "distribute.logical_cpus=2", "distribute.strategy=mirrored", *ENAS])
    try:
        pipeline.search(config, RunDirectory(os.path.join(out, "enas")), verbose=0,
                        prepared=pipeline.prepare(config))
    except DistributionError as err:
        results["enas_refused"] = str(err)
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
