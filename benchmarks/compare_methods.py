"""A `tuner` random search and a `differentiable` search on the same space and data, side by side.

Both run through `tfnas.pipeline` (search → architecture → retrain) on the same config's data
and space: the differentiable recipe (default `configs/quickstart.json`) and the random-search
recipe (default `configs/grunas_random.json`). Prints one JSON line: per method the architecture,
its parameters, the validation accuracy of the search (the tuner's best trial; the supernet's
argmax is not evaluated on its own; retraining uses the validation images, so only the test split
measures the result), the test accuracy after retraining, and the wall time of search and
retraining.

    python benchmarks/compare_methods.py [--train_epochs 30] [--max_trials 8]
"""

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfnas import pipeline  # noqa: E402
from tfnas.config import load_config  # noqa: E402
from tfnas.run_dir import RunDirectory  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _one(config, workdir):
    run = RunDirectory(os.path.join(workdir, config["search"]["method"]))
    run.save_config(config)
    prepared = pipeline.prepare(config)
    start = time.time()
    arch, searched = pipeline.search(config, run, verbose=0, prepared=prepared)
    search_seconds = time.time() - start
    _, trained = pipeline.train(config, run, arch, searched=searched, verbose=0,
                                prepared=prepared)
    return {"choices": arch.choice_list(), "parameters": arch.parameters,
            # the best trial's validation accuracy after trial_epochs (tuner); the supernet's
            # argmax is not trained on its own during a differentiable search
            "search_val_accuracy": arch.metadata.get("best_score"),
            "test_accuracy": round(trained["test_accuracy"], 4),
            "search_seconds": round(search_seconds, 1),
            "train_seconds": trained["train_seconds"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--differentiable", default=os.path.join(ROOT, "configs",
                                                                 "quickstart.json"))
    parser.add_argument("--tuner", default=os.path.join(ROOT, "configs", "grunas_random.json"))
    parser.add_argument("--train_epochs", type=int, default=None)
    parser.add_argument("--max_trials", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    common = [f"seed={args.seed}"]
    if args.train_epochs is not None:
        common.append(f"train.epochs={args.train_epochs}")
    diff = load_config(args.differentiable, common)
    tuner_overrides = common + ([f"search.tuner.max_trials={args.max_trials}"]
                                if args.max_trials else [])
    tuner = load_config(args.tuner, tuner_overrides)
    for key in ("data", "space", "train"):
        if diff[key] != tuner[key]:
            raise SystemExit(f"The two recipes differ in {key!r}; compare on the same {key}.")
    with tempfile.TemporaryDirectory(prefix="tfnas-compare-") as workdir:
        result = {"benchmark": "compare_methods", "space": diff["space"]["name"],
                  "dataset": diff["data"]["dataset"], "train_epochs": diff["train"]["epochs"],
                  "differentiable": _one(diff, workdir), "tuner": _one(tuner, workdir)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
