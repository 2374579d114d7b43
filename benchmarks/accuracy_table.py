"""An accuracy table of a whole (small) space for `tfnas race`: every architecture trained
the same way, from scratch, by a recipe's `train` section on its data.

Writes a CSV with one column per keras-tuner decision of the space (the values a trial of
the `tuner` method holds) and `accuracy` (the test accuracy after training); also
`parameters` and `seconds`. The shipped `tfnas/data/grunas_tiny_table.csv` is

    python benchmarks/accuracy_table.py --config configs/quickstart.json \\
        --set 'space.config.widths=[[12,24],[24,24],[24,48],[48,48]]' \\
        --set 'space.config.candidates=[1,2,4]' --set train.epochs=3 \\
        --set train.inherit=false --set data.limit=1200 --set data.batch_size=64 \\
        --out tfnas/data/grunas_tiny_table.csv      # 81 networks

`--only` keeps the architectures whose every choice is one of the given ones: a whole
subspace of a space too large to train whole, e.g. NAS-Bench-201 cells of three ops (729).
Networks that differ only on edges whose output reaches nothing are trained once. `--resume`
keeps the rows a killed run wrote and trains the rest.
"""

import argparse
import csv
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from tfnas import pipeline  # noqa: E402
from tfnas.architecture import from_choices  # noqa: E402
from tfnas.config import load_config  # noqa: E402
from tfnas.costs import count_parameters  # noqa: E402
from tfnas.methods.candidates import sample_architectures  # noqa: E402
from tfnas.run_dir import RunDirectory  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--out", required=True)
    parser.add_argument("--limit", type=int, default=10_000,
                        help="at most this many architectures (all, when the space is smaller)")
    parser.add_argument("--only", default=None,
                        help="comma-separated choices: only architectures made of these")
    parser.add_argument("--shard", default="0/1",
                        help="K/N: only every N-th architecture from the K-th (0-based), so "
                             "that N processes share a table; concatenate their files")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows --out holds (a killed run's) and add the rest")
    args = parser.parse_args()
    if os.path.exists(args.out) and not args.resume:
        raise SystemExit(f"{args.out} exists; --resume adds the missing rows to it, or choose "
                         "another --out.")
    config = load_config(args.config, [*args.set, "export.formats=[]"])
    prepared = pipeline.prepare(config)
    if args.only:
        only = {_value(v) for v in args.only.split(",")}
        drawn = [(c, v) for c, v in sample_architectures(prepared.space, 10 ** 6, config["seed"],
                                                         with_values=True)
                 if set(c.values()) <= only][:args.limit]
    else:
        drawn = sample_architectures(prepared.space, args.limit, config["seed"],
                                     with_values=True)
    shard, shards = (int(n) for n in args.shard.split("/"))
    drawn = drawn[shard::shards]
    columns = list(drawn[0][1])
    effective = getattr(prepared.space, "effective_choices", lambda choices: choices)
    trained, done = {}, set()  # networks that differ only on dead edges are trained once
    kept = []  # complete rows of a killed run, written again first
    if args.resume and os.path.exists(args.out):
        with open(args.out, newline="", encoding="utf-8") as f:
            rows = {tuple(row[c] for c in columns): row for row in csv.DictReader(f)
                    if row.get("seconds")}  # a row cut by the kill is trained again
        for choices, values in drawn:
            row = rows.get(tuple(str(values[c]) for c in columns))
            if row is not None:
                done.add(json.dumps(values, sort_keys=True))
                trained[json.dumps(effective(choices), sort_keys=True)] = (
                    float(row["accuracy"]), int(row["parameters"]))
                kept.append([row[c] for c in [*columns, "accuracy", "parameters", "seconds"]])
    with open(f"{args.out}.tmp", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([[*columns, "accuracy", "parameters", "seconds"], *kept])
    os.replace(f"{args.out}.tmp", args.out)  # the kept rows are never only in memory
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="tfnas-table-") as scratch, \
            open(args.out, "a", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        for index, (choices, values) in enumerate(drawn):
            if json.dumps(values, sort_keys=True) in done:
                continue
            began = time.time()
            key = json.dumps(effective(choices), sort_keys=True)
            if key not in trained:
                keras.utils.set_random_seed(config["seed"])
                arch = from_choices(prepared.space, choices)
                run = RunDirectory(os.path.join(scratch, str(index)))
                model, summary = pipeline.train(config, run, arch, verbose=0,
                                                prepared=prepared)
                trained[key] = (summary["test_accuracy"], count_parameters(model))
                keras.backend.clear_session(free_memory=False)
            accuracy, parameters = trained[key]
            writer.writerow([*[values[c] for c in columns], f"{accuracy:.6f}", parameters,
                             f"{time.time() - began:.1f}"])
            f.flush()
            print(f"{index + 1}/{len(drawn)} {choices} {accuracy:.4f} "
                  f"({time.time() - start:.0f} s)", flush=True)


def _value(text):
    try:
        return int(text)
    except ValueError:
        return text


if __name__ == "__main__":
    main()
