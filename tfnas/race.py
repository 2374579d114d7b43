"""Races of keras-tuner oracles over a table of architectures' accuracies.

A search strategy is judged on a tabular benchmark before it spends GPU days: every
architecture of a space trained once, its accuracy looked up by a plain
`keras_tuner.Tuner` instead of trained again. `race` runs each oracle for `trials`
trials over `seeds` seeds on one table and reports what the field reports: the best
accuracy found after k trials, and how many trials it took to find an architecture in
the table's top 1 % and top 5 %, as means and medians over the seeds.

The table is a CSV file, one row per architecture: one column per decision (its values,
numbers or names), then `accuracy`; columns after it (parameters, seconds) stay out of
the race. E.g.

    unit_1,unit_2,unit_3,accuracy,parameters
    1,1,1,0.412,9034
    1,1,2,0.405,8722

Each decision becomes `hp.Choice(column, sorted values)`; the objective is `accuracy`, to
maximize. `benchmarks/accuracy_table.py` makes such a table by training every
architecture of a small space (the decision names are the `tuner` method's, so a table of
a tfnas space maps back to its architectures); `tfnas/data/grunas_tiny_table.csv` ships
one (`TINY_TABLE`).
"""

import csv
import json
import math
import os
import statistics
import tempfile
import time

import numpy as np

ORACLES = ("random", "evolution", "enas", "enas_released", "bayesian")
TINY_TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                          "grunas_tiny_table.csv")
MILESTONES = (10, 25, 50, 100, 200, 500, 1000)


class TableError(ValueError):
    """A table that cannot be raced; the message names the problem and the fix."""


def _value(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_table(path):
    """`(decisions, rows)`: `{column: sorted values}` and `{tuple of values: accuracy}`."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            columns = header[:header.index("accuracy")] if "accuracy" in header else []
            if not columns:
                raise TableError(f"{path}: a table needs decision columns and an 'accuracy' "
                                 f"column; the header is {reader.fieldnames}.")
            rows = {}
            for line, row in enumerate(reader, start=2):
                key = tuple(_value(row[c]) for c in columns)
                try:
                    rows[key] = float(row["accuracy"])
                except (TypeError, ValueError):
                    raise TableError(f"{path}, line {line}: accuracy {row['accuracy']!r} is "
                                     "not a number.") from None
    except OSError as err:
        raise TableError(f"Cannot read the table {path}: {err.strerror}.") from None
    if not rows:
        raise TableError(f"{path} has no rows.")
    decisions = {c: sorted({k[i] for k in rows}, key=lambda v: (str(type(v)), v))
                 for i, c in enumerate(columns)}
    return decisions, rows


def _oracle(name, trials, seed):
    import keras_tuner as kt  # pylint: disable=import-outside-toplevel

    from tfnas.tuners import EnasOracle, EvolutionOracle  # pylint: disable=import-outside-toplevel

    objective = kt.Objective("accuracy", "max")
    classes = {"random": kt.oracles.RandomSearchOracle, "evolution": EvolutionOracle,
               "enas": EnasOracle, "bayesian": kt.oracles.BayesianOptimizationOracle}
    if name not in ORACLES:
        raise TableError(f"Unknown oracle {name!r}; race {list(ORACLES)}.")
    if name == "enas_released":  # the ENAS code's own settings (EnasOracle's presets)
        return EnasOracle(objective=objective, max_trials=trials, seed=seed, preset="released")
    oracle = classes[name](objective=objective, max_trials=trials, seed=seed)
    oracle.seed = seed  # keras-tuner's own oracles draw a random seed for 0
    return oracle


def race_one(decisions, rows, oracle, directory):
    """The accuracies of `oracle`'s trials on the table, in trial order, and the seconds
    the whole run took."""
    import keras_tuner as kt  # pylint: disable=import-outside-toplevel

    columns = list(decisions)

    class Lookup(kt.Tuner):
        def run_trial(self, trial, *args, **kwargs):
            hp = trial.hyperparameters
            key = tuple(hp.Choice(c, decisions[c]) for c in columns)
            if key not in rows:
                raise kt.errors.FailedTrialError(f"the table has no row for {key}")
            return {"accuracy": rows[key]}

    def declare(hp):  # the whole space is known before the first trial
        for c in columns:
            hp.Choice(c, decisions[c])

    start = time.perf_counter()
    tuner = Lookup(oracle=oracle, hypermodel=declare, directory=directory, project_name="race",
                   overwrite=True)
    tuner.search(verbose=0)
    ordered = sorted(oracle.trials.values(), key=lambda t: t.trial_id)
    return ([t.score if t.score is not None else math.nan for t in ordered],
            time.perf_counter() - start)


def statistics_of(accuracies, table_accuracies):
    """Best after each milestone and trials to the table's top 1 % and 5 % (None when not
    reached) of one run."""
    ranked = np.sort(np.asarray(table_accuracies))[::-1]
    result = {}
    best = np.fmax.accumulate(np.asarray(accuracies, dtype=float))
    for k in MILESTONES:
        if k <= len(best):
            result[f"best_after_{k}"] = float(best[k - 1])
    for share in (1, 5):
        threshold = ranked[max(0, math.ceil(len(ranked) * share / 100) - 1)]
        reached = np.nonzero(best >= threshold)[0]
        result[f"trials_to_top_{share}"] = int(reached[0]) + 1 if len(reached) else None
    return result


def race(table, oracles=("random", "evolution", "enas"), trials=200, seeds=10, out=None,
         log=print):
    """Races `oracles` over the table at `table` (`read_table`): `trials` trials, seeds
    `0..seeds-1` each. Returns `{oracle: summary}`; with `out`, writes `runs.csv` (every
    trial), `summary.json` and `best_so_far.png` there. A run that never reaches a top
    share counts `trials` trials for its mean and is reported in `missed_top_*`.

    Examples:
        >>> summary = race(TINY_TABLE, ["random", "evolution"], trials=20, seeds=2,
        ...                log=None)
        >>> sorted(summary["evolution"])[:3]
        ['best_after_10_mean', 'best_after_10_median', 'best_after_10_std']
    """
    decisions, rows = read_table(table)
    values = list(rows.values())
    runs, summary = [], {}
    with tempfile.TemporaryDirectory(prefix="tfnas-race-") as scratch:
        for name in oracles:
            stats, overhead = [], []
            for seed in range(seeds):
                accuracies, seconds = race_one(decisions, rows, _oracle(name, trials, seed),
                                               os.path.join(scratch, f"{name}-{seed}"))
                stats.append(statistics_of(accuracies, values))
                overhead.append(seconds / max(1, len(accuracies)))
                best = np.fmax.accumulate(np.asarray(accuracies, dtype=float))
                runs += [{"oracle": name, "seed": seed, "trial": i + 1, "accuracy": a,
                          "best_so_far": b} for i, (a, b) in enumerate(zip(accuracies, best))]
            summary[name] = _summarize(stats, trials)
            summary[name]["seconds_per_trial"] = statistics.mean(overhead)
            if log:
                log(f"{name}: " + ", ".join(
                    f"{k} {v:.4g}" for k, v in summary[name].items()
                    if k.endswith("_mean") and v is not None))
    summary["table"] = {"path": str(table), "architectures": len(rows),
                        "best": max(values), "median": statistics.median(values),
                        "trials": trials, "seeds": seeds}
    if out:
        _write(out, runs, summary)
    return summary


def _summarize(stats, trials):
    result = {}
    for key in stats[0]:
        found = [s[key] for s in stats]
        if key.startswith("trials_to"):
            result[f"missed_{key[len('trials_to_'):]}"] = sum(v is None for v in found)
            found = [trials if v is None else v for v in found]
        result[f"{key}_mean"] = statistics.mean(found)
        result[f"{key}_median"] = statistics.median(found)
        if key.startswith("best_after"):
            result[f"{key}_std"] = statistics.pstdev(found)
    return result


def _write(out, runs, summary):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "runs.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(runs[0]))
        writer.writeheader()
        writer.writerows(runs)
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["oracle"] for r in runs):
        curves = {}
        for r in runs:
            if r["oracle"] == name:
                curves.setdefault(r["seed"], []).append(r["best_so_far"])
        length = min(len(c) for c in curves.values())
        curve = np.array([c[:length] for c in curves.values()])
        mean, std = curve.mean(0), curve.std(0)
        x = np.arange(1, length + 1)
        ax.plot(x, mean, label=name)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("trials")
    ax.set_ylabel("best accuracy so far (mean ± std over seeds)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "best_so_far.png"), dpi=100)
    plt.close(fig)
