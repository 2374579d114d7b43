"""Latency table of the GRUNAS space, validated against whole derived networks.

Builds the table on this host (LiteRT, one thread), samples architectures of
the space, converts each whole network, times it, and compares with the
table's prediction. Prints one JSON line with the error distribution.

    python benchmarks/latency_table.py [--archs 20] [--mode float32] [--table out.json]
"""

import argparse
import json
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfnas.deploy.benchmark import benchmark_host  # noqa: E402
from tfnas.deploy.latency import (build_table, calibrate_table, convert_for_timing,  # noqa: E402
                                  predict, save_table)
from tfnas.spaces import get_space  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--archs", type=int, default=20)
    parser.add_argument("--mode", default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--table", default=None, help="also write the table here")
    parser.add_argument("--calibrate", type=int, default=0,
                        help="fit the table's scale on this many other whole networks first")
    args = parser.parse_args()
    space = get_space("grunas")
    table = build_table(space, mode=args.mode, repeats=args.repeats, log=None)
    if args.calibrate:
        # Calibration networks come from another seed than the validation networks below.
        table = calibrate_table(table, space, num_networks=args.calibrate, seed=1000)
    if args.table:
        save_table(table, args.table, overwrite=True)
    rng = np.random.default_rng(0)
    workdir = tempfile.mkdtemp()
    rows = []
    for i in range(args.archs):
        choices = {b: int(rng.choice(space.candidates(b))) for b in space.blocks()}
        keras.utils.set_random_seed(i)
        model = space.build_model(choices)
        path = convert_for_timing(model, args.mode, workdir, f"m{i}")
        measured = float(np.median([benchmark_host(path, 1, 20, 200)["median_ms"]
                                    for _ in range(args.repeats)]))
        predicted = predict(table, space, choices)
        rows.append({"choices": list(choices.values()), "measured_ms": round(measured, 4),
                     "predicted_ms": round(predicted, 4),
                     "error": round((predicted - measured) / measured, 4)})
    errors = np.array([r["error"] for r in rows])
    print(json.dumps({
        "benchmark": "latency_table_validation", "space": "grunas", "mode": args.mode,
        "num_threads": 1, "archs": len(rows), "overhead_ms": round(table["overhead"], 4),
        "scale": table.get("scale", 1.0), "calibration": table.get("calibration"),
        "within_10_percent": float(np.mean(np.abs(errors) <= 0.10)),
        "abs_error_median": round(float(np.median(np.abs(errors))), 4),
        "abs_error_p90": round(float(np.percentile(np.abs(errors), 90)), 4),
        "error_min": round(float(errors.min()), 4), "error_max": round(float(errors.max()), 4),
        "rows": rows}))


if __name__ == "__main__":
    main()
