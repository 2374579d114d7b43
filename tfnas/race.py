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
one (`TINY_TABLE`), and `NASBENCH201_3OPS_TABLE` a NAS-Bench-201 subspace with proxy
columns for warm-started races.
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
# The 729 NAS-Bench-201 cells of none / skip_connect / nor_conv_3x3 (8 filters, a cell a
# stage), each trained 3 epochs on 1,200 bundled images, with zero-cost proxy columns
# (benchmarks/accuracy_table.py, benchmarks/table_proxies.py; docs/results.md).
NASBENCH201_3OPS_TABLE = os.path.join(os.path.dirname(TINY_TABLE), "nasbench201_3ops_table.csv")
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


def _json_rows(path, f):
    """A JSON table: a list of objects, each the decisions then `accuracy` (then any other
    numbers), in that key order; read as the CSV form's header and rows."""
    try:
        records = json.load(f)
    except ValueError as err:
        raise TableError(f"{path} is not JSON ({err}); a JSON table is a list of objects "
                         '{"<decision>": value, ..., "accuracy": number}.') from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise TableError(f"{path}: a JSON table is a list of objects "
                         '{"<decision>": value, ..., "accuracy": number}.')
    header = list(records[0]) if records else []
    for line, record in enumerate(records, start=1):
        if list(record) != header:
            raise TableError(f"{path}, row {line}: keys {list(record)}; every row has the "
                             f"first row's keys in its order, {header}.")
    return header, [{k: str(v) for k, v in r.items()} for r in records]


def read_table(path, scores=()):
    """`(decisions, rows)`: `{column: sorted values}` and `{tuple of values: accuracy}`;
    with `scores` (names of columns after `accuracy`), `(decisions, rows, scored)` where
    `scored` is `{tuple of values: {column: number}}`. `path` is a CSV file, or a JSON
    one (`.json`: a list of objects, keys in the CSV columns' order)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            if str(path).endswith(".json"):
                (header, reader), first, unit = _json_rows(path, f), 1, "row"
            else:
                reader, first, unit = csv.DictReader(f), 2, "line"
                header = reader.fieldnames or []
            columns = header[:header.index("accuracy")] if "accuracy" in header else []
            if not columns:
                raise TableError(f"{path}: a table needs decision columns and an 'accuracy' "
                                 f"column; the header is {header}.")
            absent = [c for c in scores if c not in header[header.index("accuracy") + 1:]]
            if absent:
                raise TableError(f"{path} has no column {absent[0]!r} after 'accuracy' to "
                                 f"warm-start from; its columns are {header}.")
            rows, scored = {}, {}
            for line, row in enumerate(reader, start=first):
                key = tuple(_value(row[c]) for c in columns)
                for column in ("accuracy", *scores):
                    try:
                        value = float(row[column])
                    except (TypeError, ValueError):
                        raise TableError(f"{path}, {unit} {line}: {column} {row[column]!r} "
                                         "is not a number.") from None
                    if column == "accuracy":
                        rows[key] = value
                    else:
                        scored.setdefault(key, {})[column] = value
    except OSError as err:
        raise TableError(f"Cannot read the table {path}: {err.strerror}.") from None
    if not rows:
        raise TableError(f"{path} has no rows.")
    decisions = {c: sorted({k[i] for k in rows}, key=lambda v: (str(type(v)), v))
                 for i, c in enumerate(columns)}
    if scores:
        return decisions, rows, scored
    return decisions, rows


def warm_start_values(decisions, scored, columns, candidates, trials, seed):
    """What `search.warm_start` hands an oracle, on a table: `candidates` architectures
    drawn at random (from `seed`) stand for the untrained networks a proxy scores; the
    `trials` best of them by the table's proxy `columns` (one, or several voting as
    `tfnas.proxies.vote`) are the oracle's `initial_values`, best first."""
    from tfnas import proxies  # pylint: disable=import-outside-toplevel

    keys = sorted(scored, key=str)
    rng = np.random.default_rng(seed)
    drawn = [keys[i] for i in rng.choice(len(keys), min(candidates, len(keys)), replace=False)]
    votes = proxies.vote([scored[k] for k in drawn], list(columns))
    ranked = sorted(range(len(drawn)), key=lambda i: (-votes[i], i))[:trials]
    names = list(decisions)
    return [dict(zip(names, drawn[i])) for i in ranked]


def _oracle(name, trials, seed, initial_values=(), mutation_scorer=None, mutations=1):
    import keras_tuner as kt  # pylint: disable=import-outside-toplevel

    from tfnas.tuners import EnasOracle, EvolutionOracle  # pylint: disable=import-outside-toplevel
    from tfnas.tuners.warm_start import warm_started  # pylint: disable=import-outside-toplevel

    objective = kt.Objective("accuracy", "max")
    classes = {"random": kt.oracles.RandomSearchOracle, "evolution": EvolutionOracle,
               "bayesian": kt.oracles.BayesianOptimizationOracle}
    if name not in ORACLES:
        raise TableError(f"Unknown oracle {name!r}; race {list(ORACLES)}.")
    if name.startswith("enas"):  # "enas_released": the ENAS code's own settings
        return EnasOracle(objective=objective, max_trials=trials, seed=seed,
                          preset="released" if name == "enas_released" else "default",
                          initial_values=initial_values)
    oracle_class = warm_started(classes[name]) if initial_values else classes[name]
    kwargs = {"initial_values": initial_values} if initial_values else {}
    if name == "evolution" and mutations > 1:
        kwargs.update(mutation_scorer=mutation_scorer, mutation_candidates=mutations)
    oracle = oracle_class(objective=objective, max_trials=trials, seed=seed, **kwargs)
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
         log=print, warm_start=None):
    """Races `oracles` over the table at `table` (`read_table`): `trials` trials, seeds
    `0..seeds-1` each. Returns `{oracle: summary}`; with `out`, writes `runs.csv` (every
    trial), `summary.json` and `best_so_far.png` there. A run that never reaches a top
    share counts `trials` trials for its mean and is reported in `missed_top_*`.

    `warm_start={"proxy": column or [columns], "candidates": N, "trials": K}` races the
    oracles warm-started as the `tuner` method's `search.warm_start` does
    (`warm_start_values`), the proxy scores read from the table's columns (e.g. written by
    `benchmarks/table_proxies.py`); every oracle of one seed gets the same start. Trials
    count trained architectures only; the proxy evaluations are the `candidates`. With
    `"mutations": M > 1` evolution also ranks M children of each tournament's winner by
    the proxy and trains the best (`EvolutionOracle(mutation_candidates=M)`).

    Examples:
        >>> summary = race(TINY_TABLE, ["random", "evolution"], trials=20, seeds=2,
        ...                log=None)
        >>> sorted(summary["evolution"])[:3]
        ['best_after_10_mean', 'best_after_10_median', 'best_after_10_std']
    """
    from tfnas.tuners.warm_start import DEFAULTS  # pylint: disable=import-outside-toplevel

    unknown = sorted(set(warm_start or {}) - set(DEFAULTS))
    if unknown:
        raise TableError(f"warm_start takes proxy, candidates, trials and mutations; got "
                         f"{unknown}.")
    # No default proxy here: a table's proxy columns are named by the caller.
    columns = (warm_start or {}).get("proxy") or ()
    columns = [columns] if isinstance(columns, str) else list(columns)
    settings = {**DEFAULTS, **(warm_start or {})}
    decisions, rows, scored = read_table(table, columns) if columns else (*read_table(table),
                                                                          None)
    starts = [warm_start_values(decisions, scored, columns, settings["candidates"],
                                settings["trials"], seed) if columns else ()
              for seed in range(seeds)]
    mutations = settings["mutations"] if columns else 1

    def scorer(children):  # the proxy of each child, from the table
        from tfnas import proxies  # pylint: disable=import-outside-toplevel

        return proxies.vote([scored[tuple(c[d] for d in decisions)] for c in children],
                            columns)

    values = list(rows.values())
    runs, summary = [], {}
    with tempfile.TemporaryDirectory(prefix="tfnas-race-") as scratch:
        for name in oracles:
            stats, overhead = [], []
            for seed in range(seeds):
                oracle = _oracle(name, trials, seed, starts[seed], scorer, mutations)
                accuracies, seconds = race_one(decisions, rows, oracle,
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
    if columns:
        summary["warm_start"] = {
            "proxy": columns, "candidates": min(settings["candidates"], len(rows)),
            "trials": settings["trials"], "mutations": mutations}
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
