"""Zero-cost proxy columns for an accuracy table, so that `tfnas race --warm_start` can
race warm-started oracles on it.

Reads a table written by `benchmarks/accuracy_table.py` (the same `--config`, `--set` and
`--only`), builds each row's network untrained exactly as the `tuner` method's
`search.warm_start` does (`score_architectures`: the config's seed, one batch of its
training data) and writes the table again with one column per proxy after the others,
and `proxy_seconds` (the scoring time of the row's network). Prints one JSON line: the
proxies' Spearman ρ with the table's accuracy and the mean seconds per network.

    python benchmarks/table_proxies.py --config configs/nasbench201_dca_cpu.json \\
        --set data.limit=1200 --only none,skip_connect,nor_conv_3x3 \\
        --table nb201.csv --out nb201_proxies.csv
"""

import argparse
import csv
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from scipy import stats  # noqa: E402

from tfnas import pipeline  # noqa: E402
from tfnas.config import load_config  # noqa: E402
from tfnas.methods.candidates import sample_architectures, score_architectures  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--only", default=None,
                        help="as accuracy_table.py's --only: the choices the table's rows use")
    parser.add_argument("--table", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--proxies", default="naswot,synflow,jacob_cov")
    args = parser.parse_args()
    if os.path.exists(args.out):
        raise SystemExit(f"{args.out} exists; choose another --out.")
    names = args.proxies.split(",")
    config = load_config(args.config, [*args.set, "export.formats=[]"])
    prepared = pipeline.prepare(config)
    with open(args.table, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header, rows = list(reader.fieldnames), list(reader)
    columns = header[:header.index("accuracy")]
    only = set(args.only.split(",")) if args.only else None
    by_values = {}
    for choices, values in sample_architectures(prepared.space, 10 ** 6, config["seed"],
                                                with_values=True):
        if only is None or {str(v) for v in choices.values()} <= only:
            by_values[tuple(str(values[c]) for c in columns)] = choices
    missing = [r for r in rows if tuple(r[c] for c in columns) not in by_values]
    if missing:
        raise SystemExit(f"{len(missing)} rows are not architectures of this space, e.g. "
                         f"{missing[0]}; give the table's --config, --set and --only.")
    images, labels = next(iter(prepared.batches("train", True, epoch=0)))
    images, labels = images.numpy(), labels.numpy()
    scored = []
    for i, row in enumerate(rows):
        start = time.perf_counter()
        [result] = score_architectures(prepared.space, [by_values[tuple(row[c] for c in
                                                                        columns)]],
                                       images, labels, names, config["seed"],
                                       lambda choices, model: {}, lambda costs: [])
        scored.append((result["scores"], time.perf_counter() - start))
        if (i + 1) % 50 == 0:
            print(f"{i + 1}/{len(rows)} scored", flush=True)
    with open(f"{args.out}.tmp", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*header, *names, "proxy_seconds"])
        for row, (scores, seconds) in zip(rows, scored):
            writer.writerow([row[c] for c in header] + [repr(scores[n]) for n in names]
                            + [f"{seconds:.3f}"])
    os.replace(f"{args.out}.tmp", args.out)
    accuracy = [float(r["accuracy"]) for r in rows]
    print(json.dumps({
        "benchmark": "table_proxies", "table": args.table, "rows": len(rows),
        "spearman": {n: round(float(stats.spearmanr([s[n] for s, _ in scored], accuracy)[0]), 4)
                     for n in names},
        "seconds_per_network": round(sum(t for _, t in scored) / len(scored), 4)}))


if __name__ == "__main__":
    main()
