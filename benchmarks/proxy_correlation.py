"""How well each zero-cost proxy ranks architectures by what training gives them.

Samples `--cells` architectures of a space (NAS-Bench-201 by default, at a CPU size),
scores each untrained network with every proxy on one batch of the bundled training
images, then trains each the same way (`--epochs` on the bundled training split, SGD,
cosine) and measures its test accuracy. Prints one JSON line: each proxy's Spearman ρ
and Kendall τ with the trained accuracy, next to `params` and `flops`, the vote of
synflow + naswot + jacob_cov, and the accuracies themselves.

    python benchmarks/proxy_correlation.py --cells 16 --epochs 6     # ~15 min on 2 cores

With `--accuracies FILE` nothing is trained: FILE is a CSV of NAS-Bench-201 cells and
accuracies someone else trained (`arch,accuracy`, the arch in the benchmark's own string
form, e.g. exported from NATS-Bench's API), and the proxies are compared with those, as
the zero-cost papers do. At the benchmark's own size (C = 16, 5 cells a stage, one batch
of 64 images):

    python benchmarks/proxy_correlation.py --accuracies nb201_cifar10.csv --cells 200 \
        --set space.config.filters=16 --set space.config.cells_per_stage=5 \
        --proxies synflow,naswot,jacob_cov,snip,params,flops
"""

import argparse
import csv
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from tfnas import pipeline, proxies  # noqa: E402
from tfnas.config import load_config  # noqa: E402
from tfnas.methods.candidates import sample_architectures  # noqa: E402
from tfnas.optimizers import make_optimizer  # noqa: E402
from tfnas.spaces.nasbench201 import choices_from_string  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOTE = ("synflow", "naswot", "jacob_cov")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "configs",
                                                         "nasbench201_zero_cost.json"))
    parser.add_argument("--cells", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--accuracies", default=None,
                        help="CSV of `arch,accuracy` (NAS-Bench-201 strings): score these "
                             "cells and compare with these accuracies; nothing is trained")
    parser.add_argument("--proxies", default=",".join(proxies.PROXIES))
    args = parser.parse_args()
    names = tuple(args.proxies.split(","))
    config = load_config(args.config, [f"seed={args.seed}", *args.set])
    prepared = pipeline.prepare(config)
    space = prepared.space
    images, labels = next(iter(prepared.batches("train", True, epoch=0)))
    rows = []
    given = _given_accuracies(args.accuracies, args.cells) if args.accuracies else None
    cells = [c for c, _ in given] if given else sample_architectures(space, args.cells,
                                                                     args.seed)
    for index, choices in enumerate(cells):
        keras.utils.set_random_seed(args.seed)
        model = space.build_model(choices)
        start = time.time()
        scores = proxies.score(model, images.numpy(), labels.numpy(), proxies=names)
        scored = time.time() - start
        if given:
            rows.append({"choices": choices, "scores": scores, "accuracy": given[index][1],
                         "score_seconds": round(scored, 2)})
            keras.backend.clear_session(free_memory=False)
            continue
        steps = prepared.steps("train") * args.epochs
        model.compile(optimizer=make_optimizer(config["train"]["optimizer"], steps),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        model.fit(prepared.batches("train", True), epochs=args.epochs, verbose=0)
        _, accuracy = model.evaluate(prepared.batches("test", False), verbose=0)
        rows.append({"choices": choices, "scores": scores, "accuracy": float(accuracy),
                     "score_seconds": round(scored, 2)})
        print(json.dumps({"cell": len(rows), "accuracy": round(float(accuracy), 4),
                          **{k: float(f"{v:.5g}") for k, v in scores.items()}}),
              file=sys.stderr, flush=True)
        keras.backend.clear_session(free_memory=False)
    accuracy = [r["accuracy"] for r in rows]
    vote_of = [n for n in VOTE if n in names]
    votes = proxies.vote([r["scores"] for r in rows], vote_of) if len(vote_of) > 1 else None
    correlations = {}
    for name in (*names, *(["vote"] if votes else [])):
        values = votes if name == "vote" else [r["scores"][name] for r in rows]
        correlations[name] = {"spearman": round(float(stats.spearmanr(values, accuracy)[0]), 3),
                              "kendall": round(float(stats.kendalltau(values, accuracy)[0]), 3)}
    print(json.dumps({"benchmark": "proxy_correlation", "space": space.name,
                      "space_config": config["space"]["config"], "cells": len(rows),
                      "epochs": None if given else args.epochs, "seed": args.seed,
                      "accuracies": args.accuracies, "correlations": correlations,
                      "vote_of": vote_of if votes else [], "score_seconds_mean": round(float(np.mean(
                          [r["score_seconds"] for r in rows])), 2), "accuracy": {
                          "min": min(accuracy), "median": float(np.median(accuracy)),
                          "max": max(accuracy)},
                      "rows": rows}))


def _given_accuracies(path, limit):
    """`[(choices, accuracy)]` of the first `limit` rows of an `arch,accuracy` CSV."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"arch", "accuracy"} <= set(reader.fieldnames or ()):
            sys.exit(f"{path}: a CSV with columns arch (NAS-Bench-201 strings) and accuracy.")
        return [(choices_from_string(r["arch"]), float(r["accuracy"]))
                for _, r in zip(range(limit), reader)]


if __name__ == "__main__":
    main()
