"""Whole ENAS search throughput: architectures the controller evaluates per minute.

Runs the search stage of an ENAS recipe (`search.method: "enas"`) on its data, as
`tfnas search` does, and times it from the moment the search starts: the first trial
(which carries the one trace of the child step), then the steady rate from the
completion times keras-tuner leaves on each trial's file. Prints one JSON line.

    python benchmarks/enas_search.py [--config configs/grunas_enas.json] [--trials 60]
"""

import argparse
import glob
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfnas import pipeline  # noqa: E402
from tfnas.config import load_config  # noqa: E402
from tfnas.run_dir import RunDirectory  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/grunas_enas.json")
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--set", action="append", default=[],
                        help="config override key.path=value, as tfnas --set")
    args = parser.parse_args()
    config = load_config(args.config, [f"search.trials={args.trials}", *args.set])
    prepared = pipeline.prepare(config)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDirectory(os.path.join(tmp, "run"))
        run.save_config(config)
        start = time.time()
        arch, _ = pipeline.search(config, run, verbose=0, prepared=prepared)
        total = time.time() - start
        ends = sorted(os.path.getmtime(p) for p in glob.glob(
            os.path.join(run.path, "checkpoints", "enas", "trial_*", "trial.json")))
    steady = (len(ends) - 1) / (ends[-1] - ends[0]) * 60 if len(ends) > 1 else None
    print(json.dumps({
        "benchmark": "enas_search", "config": args.config, "space": config["space"]["name"],
        "trials": len(ends), "child_steps": config["search"]["child_steps"],
        "batch_size": config["data"]["batch_size"],
        "first_trial_s": round(ends[0] - start, 1), "search_s": round(total, 1),
        "architectures_per_minute": round(len(ends) / total * 60, 1),
        "steady_architectures_per_minute": steady and round(steady, 1),
        "child_step_traces": arch.metadata["child_step_traces"],
        "choices": arch.choices}))


if __name__ == "__main__":
    main()
