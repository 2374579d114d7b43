"""A `tfnas race` table of the whole NAS-Bench-201 space from cells trained elsewhere.

Reads an `arch,accuracy` CSV of NAS-Bench-201 strings (e.g. exported from NATS-Bench's
API: all 15,625 cells, or a sample of them) and writes the race table of the 6 edges ×
5 ops (`n1_in0 ... n3_in2` = op names, then `accuracy`, then `params`, the live
convolutions' parameter count of a cell at `--filters`, a proxy column for warm starts).
Cells the CSV lacks are filled by a surrogate fitted to the given ones (gradient-boosted
trees over each edge's op, the live ops' counts and each input-output path's depth and
pools), plus independent Gaussian noise of `--noise` points, since real tables are not
smooth; cells whose output no input reaches get the given such cells' accuracy. The
surrogate's 10-fold cross-validated Spearman ρ is printed with the table's percentiles.
Given every cell, the table is the CSV itself.

    python benchmarks/nasbench201_table.py --accuracies nb201_cifar10.csv --out nb201.csv
    tfnas race --table nb201.csv --oracles random,evolution,enas --trials 200 --seeds 10
"""

import argparse
import csv
import itertools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from tfnas.layers.cell_ops import NB201_OPS  # noqa: E402
from tfnas.spaces.nasbench201 import EDGES, choices_from_string, edge_block  # noqa: E402

BLOCKS = [edge_block(i, j) for i, j in EDGES]
# The input-output paths of the cell, as edges.
PATHS = (((3, 0),), ((1, 0), (3, 1)), ((2, 0), (3, 2)), ((1, 0), (2, 1), (3, 2)))
CONVS = ("nor_conv_1x1", "nor_conv_3x3")


def live_edges(ops):
    """The edges on some input-output path that passes no `none`."""
    forward, backward = {0}, {3}
    for (i, j), op in zip(EDGES, ops):
        if op != "none" and j in forward:
            forward.add(i)
    for (i, j), op in reversed(list(zip(EDGES, ops))):
        if op != "none" and i in backward:
            backward.add(j)
    return [op != "none" and j in forward and i in backward for (i, j), op in zip(EDGES, ops)]


def features(ops):
    live = live_edges(ops)
    row = [float(op == o) for op in ops for o in NB201_OPS]
    row += [sum(1.0 for op, on in zip(ops, live) if on and op == o) for o in NB201_OPS[1:]]
    depths = []
    for path in PATHS:
        on_path = [ops[EDGES.index(e)] for e in path]
        if "none" in on_path:
            row += [-1.0, -1.0]
        else:
            depths.append(sum(op in CONVS for op in on_path))
            row += [float(depths[-1]), float(on_path.count("avg_pool_3x3"))]
    row += [max(depths, default=-1), min(depths, default=-1)]
    return row


def params(ops, filters):
    """Parameters of the live convolutions of one cell at `filters` (the rest of the network
    is the same for every cell): a ranking proxy, as the `params` proxy is."""
    sizes = {"nor_conv_1x1": filters * filters + 2 * filters,
             "nor_conv_3x3": 9 * filters * filters + 2 * filters}
    return sum(sizes.get(op, 0) for op, on in zip(ops, live_edges(ops)) if on)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accuracies", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--noise", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--filters", type=int, default=16)
    args = parser.parse_args()
    if os.path.exists(args.out):
        sys.exit(f"{args.out} exists; give a new --out.")
    from sklearn.ensemble import GradientBoostingRegressor  # pylint: disable=import-outside-toplevel
    from sklearn.model_selection import cross_val_predict  # pylint: disable=import-outside-toplevel

    with open(args.accuracies, newline="", encoding="utf-8") as f:
        given = {tuple(choices_from_string(r["arch"])[b] for b in BLOCKS): float(r["accuracy"])
                 for r in csv.DictReader(f)}
    connected = {ops: a for ops, a in given.items() if any(live_edges(ops))}
    broken = [a for ops, a in given.items() if not any(live_edges(ops))]
    x = np.array([features(ops) for ops in connected])
    y = np.array(list(connected.values()))
    model = GradientBoostingRegressor(n_estimators=300, max_depth=3, learning_rate=0.05,
                                      subsample=0.8, random_state=args.seed)
    folds = min(10, len(y))
    predicted = cross_val_predict(model, x, y, cv=folds)
    model.fit(x, y)
    rng = np.random.default_rng(args.seed)
    cells = list(itertools.product(NB201_OPS, repeat=len(BLOCKS)))
    missing = [ops for ops in cells if ops not in given and any(live_edges(ops))]
    filled = dict(zip(missing, model.predict(np.array([features(o) for o in missing]))
                      + rng.normal(0.0, args.noise, len(missing))))
    chance = float(np.mean(broken)) if broken else float(y.min())
    accuracies = [given.get(ops, filled.get(ops, chance)) for ops in cells]
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*BLOCKS, "accuracy", "params"])
        for ops, accuracy in zip(cells, accuracies):
            writer.writerow([*ops, f"{accuracy:.3f}", params(ops, args.filters)])
    print(json.dumps({
        "benchmark": "nasbench201_table", "given": len(given), "filled": len(filled),
        "surrogate_cv_spearman": round(float(stats.spearmanr(predicted, y)[0]), 3),
        "noise": args.noise, "percentiles": {p: round(float(np.percentile(accuracies, p)), 2)
                                             for p in (50, 80, 95, 99)}, "out": args.out}))


if __name__ == "__main__":
    main()
