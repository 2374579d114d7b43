"""EnasOracle against keras-tuner's RandomSearch and BayesianOptimization on table-lookup
problems: every architecture's reward is known in advance, so a trial costs nothing and the
question is only how many trials each oracle needs.

The tables have structure, as architecture search problems do: eight decisions of five
choices (390,625 architectures), a reward that sums a per-decision term and a term for each
pair of neighbouring decisions (an op's worth depends on its input), all drawn at random per
table. For each oracle and seed: the trial at which the best reward so far first reaches the
table's top 1 %, and the best-so-far curve (as the rank percentile of the best architecture
found, 100 = the optimum). Hyperband does not apply: it needs a training budget to cut.

Prints one JSON line; `--curves PATH` writes the mean curves as CSV, `--plot PATH` as PNG.

    python benchmarks/enas_oracle.py [--seeds 5] [--trials 300]
"""

import argparse
import itertools
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras_tuner as kt  # noqa: E402
import numpy as np  # noqa: E402

from tfnas.tuners import EnasOracle  # noqa: E402

DECISIONS, CHOICES = 8, 5


class Table:
    """Rewards of every architecture: unary + neighbour-pair terms, from `seed`."""

    def __init__(self, seed):
        rng = np.random.default_rng(seed)
        self.unary = rng.normal(0, 1.0, (DECISIONS, CHOICES))
        self.pair = rng.normal(0, 0.7, (DECISIONS - 1, CHOICES, CHOICES))
        grid = np.array(list(itertools.product(range(CHOICES), repeat=DECISIONS)))
        rewards = self.unary[np.arange(DECISIONS), grid].sum(1) + \
            self.pair[np.arange(DECISIONS - 1), grid[:, :-1], grid[:, 1:]].sum(1)
        self.sorted = np.sort(rewards)
        self.top1 = self.sorted[int(0.99 * len(rewards))]

    def __call__(self, choices):
        c = np.asarray(choices)
        return float(self.unary[np.arange(DECISIONS), c].sum()
                     + self.pair[np.arange(DECISIONS - 1), c[:-1], c[1:]].sum())

    def percentile(self, reward):
        return 100.0 * np.searchsorted(self.sorted, reward, side="right") / len(self.sorted)


class TableTuner(kt.Tuner):
    """A tuner whose trial looks the architecture's reward up."""

    def __init__(self, table, **kwargs):
        super().__init__(**kwargs)
        self.table, self.rewards = table, []

    def run_trial(self, trial, *args, **kwargs):
        values = trial.hyperparameters.values
        reward = self.table([values[f"op_{i}"] for i in range(DECISIONS)])
        self.rewards.append(reward)
        return {"reward": reward}


def build(hp):
    for i in range(DECISIONS):
        hp.Choice(f"op_{i}", list(range(CHOICES)))


def make_oracle(name, trials, seed):
    objective = kt.Objective("reward", "max")
    if name == "random":
        return kt.oracles.RandomSearchOracle(objective=objective, max_trials=trials, seed=seed)
    if name == "bayesian":  # needs scikit-learn (keras-tuner[bayesian])
        return kt.oracles.BayesianOptimizationOracle(objective=objective, max_trials=trials,
                                                     seed=seed)
    if name == "enas_released":
        return EnasOracle(objective=objective, max_trials=trials, seed=seed, preset="released")
    if name == "enas_released_lr":  # the released settings with a learning rate for few trials
        return EnasOracle(objective=objective, max_trials=trials, seed=seed, preset="released",
                          learning_rate=0.05, samples_per_update=5)
    if name == "enas":
        return EnasOracle(objective=objective, max_trials=trials, seed=seed)
    raise SystemExit(f"unknown oracle {name!r}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--oracles", default="random,bayesian,enas_released,enas_released_lr,enas")
    parser.add_argument("--curves", default=None, help="CSV of the mean best-so-far curves")
    parser.add_argument("--plot", default=None, help="PNG of the mean best-so-far curves")
    args = parser.parse_args()
    names = args.oracles.split(",")
    hits = {n: [] for n in names}
    curves = {n: [] for n in names}
    seconds = {n: 0.0 for n in names}
    with tempfile.TemporaryDirectory() as directory:
        for seed in range(args.seeds):
            table = Table(1000 + seed)
            for name in names:
                start = time.perf_counter()
                tuner = TableTuner(table, oracle=make_oracle(name, args.trials, seed + 1),
                                   hypermodel=build,
                                   directory=directory, project_name=f"{name}_{seed}",
                                   overwrite=True)
                tuner.search(verbose=0)
                seconds[name] += time.perf_counter() - start
                best = np.maximum.accumulate(tuner.rewards)
                curves[name].append([table.percentile(r) for r in best])
                reached = np.nonzero(best >= table.top1)[0]
                # Not reached within the budget counts as the budget (a lower bound).
                hits[name].append(int(reached[0]) + 1 if len(reached) else args.trials)
    result = {"benchmark": "enas_oracle_table_lookup", "decisions": DECISIONS,
              "choices": CHOICES, "seeds": args.seeds, "trials": args.trials,
              "trials_to_top1pct_mean": {n: float(np.mean(hits[n])) for n in names},
              "trials_to_top1pct_median": {n: float(np.median(hits[n])) for n in names},
              "trials_to_top1pct": hits,
              "reached_top1pct": {n: int(sum(h < args.trials or c[-1] >= 99.0
                                             for h, c in zip(hits[n], curves[n])))
                                  for n in names},
              "seconds_per_trial": {n: round(seconds[n] / (args.seeds * args.trials), 4)
                                    for n in names},
              "best_percentile_at": {
                  n: {str(t): round(float(np.mean([c[min(t, len(c)) - 1]
                                                   for c in curves[n]])), 3)
                      for t in sorted({10, 25, 50, 100, 200, args.trials}) if t <= args.trials}
                  for n in names}}
    if args.plot:
        import matplotlib  # pylint: disable=import-outside-toplevel

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

        fig, ax = plt.subplots(figsize=(6, 4))
        for n in names:
            ax.plot(np.arange(1, args.trials + 1), np.mean(curves[n], 0), label=n)
        ax.axhline(99.0, color="grey", lw=0.8, ls="--")
        ax.set(xlabel="trials", ylabel="best so far (percentile of all architectures)",
               ylim=(90, 100.05), title=f"table lookup, {args.seeds} seeds")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
    if args.curves:
        with open(args.curves, "w", encoding="utf-8") as f:
            f.write("trial," + ",".join(names) + "\n")
            for t in range(args.trials):
                f.write(f"{t + 1}," + ",".join(
                    f"{np.mean([c[min(t, len(c) - 1)] for c in curves[n]]):.3f}"
                    for n in names) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
