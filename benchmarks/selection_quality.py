"""What a search finds, judged by training: each job searches with a recipe (or draws a
random architecture of its space), then trains the result by the recipe's `train`
section, and prints a JSON line with the test accuracy. Random architectures are
trained by the same recipe, so they are the baseline.

The comparison in docs/search-methods.md, 2-core CPU:

    python benchmarks/selection_quality.py --out /tmp/quality \\
        configs/nasbench201_zero_cost_pt.json:0 configs/nasbench201_zero_cost_pt.json:1 \\
        configs/nasbench201_zero_cost_pt.json:2 configs/nasbench201_zero_cost.json:0 \\
        configs/nasbench201_zero_cost.json:1 configs/nasbench201_zero_cost.json:2 \\
        random:configs/nasbench201_zero_cost.json:0 ... :5

A job is `RECIPE:SEED` or `random:RECIPE:SEED` (the random architecture drawn with seed
1000 + SEED, trained with the recipe's seed set to SEED).
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfnas import pipeline  # noqa: E402
from tfnas.architecture import from_choices  # noqa: E402
from tfnas.config import load_config  # noqa: E402
from tfnas.methods.candidates import sample_architectures  # noqa: E402
from tfnas.run_dir import RunDirectory  # noqa: E402


def run_job(job, out, overrides):
    random = job.startswith("random:")
    recipe, seed = job.removeprefix("random:").rsplit(":", 1)
    seed = int(seed)
    config = load_config(recipe, [f"seed={seed}", "export.formats=[]", *overrides])
    name = f"{'random' if random else config['name']}_{seed}"
    run = RunDirectory(os.path.join(out, name))
    run.save_config(config)
    prepared = pipeline.prepare(config)
    start = time.time()
    if random:
        choices = sample_architectures(prepared.space, 1, seed=1000 + seed)[0]
        arch, searched = from_choices(prepared.space, choices, metadata={"method": "random"}), None
    else:
        arch, searched = pipeline.search(config, run, verbose=0, prepared=prepared)
    search_seconds = time.time() - start
    start = time.time()
    _, summary = pipeline.train(config, run, arch, searched, verbose=0, prepared=prepared)
    return {"job": job, "name": name, "choices": arch.choices, "parameters": arch.parameters,
            "test_accuracy": summary["test_accuracy"], "search_seconds": round(search_seconds, 1),
            "train_seconds": round(time.time() - start, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("jobs", nargs="+", help="RECIPE:SEED or random:RECIPE:SEED")
    parser.add_argument("--out", required=True, help="a new directory for the runs")
    parser.add_argument("--set", action="append", default=[], help="config overrides")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=False)
    for job in args.jobs:
        print(json.dumps(run_job(job, args.out, args.set)), flush=True)


if __name__ == "__main__":
    main()
