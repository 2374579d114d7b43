"""tfnas.race and `tfnas race`: keras-tuner oracles raced over an accuracy table."""

import csv
import itertools
import json

import numpy as np
import pytest

from tfnas import race


def _write_table(path, rows, header=("a", "b", "op", "accuracy", "parameters")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    rows = [[a, b, op, round(float(rng.uniform(0.3, 0.9)), 4), 100 * a]
            for a, b, op in itertools.product([1, 2, 4], [0, 1], ["conv", "pool", "skip"])]
    return _write_table(tmp_path / "table.csv", rows), rows


def test_statistics_count_trials_to_the_tables_top_shares():
    table = [0.1 * k for k in range(1, 101)]  # top 1 %: 10.0; top 5 %: >= 9.6
    stats = race.statistics_of([0.5, 9.7, 3.0, 10.0, 1.0], table)
    assert stats["trials_to_top_5"] == 2 and stats["trials_to_top_1"] == 4
    assert "best_after_10" not in stats  # fewer trials than the milestone
    assert race.statistics_of([0.5], table)["trials_to_top_1"] is None


def test_a_race_writes_runs_summary_and_plot(table, tmp_path):
    path, rows = table
    summary = race.race(path, ["random", "evolution"], trials=10, seeds=3,
                        out=str(tmp_path / "out"), log=None)
    assert summary["table"]["architectures"] == 18
    assert summary["table"]["best"] == max(r[3] for r in rows)
    for name in ("random", "evolution"):
        assert summary[name]["best_after_10_mean"] <= summary["table"]["best"]
        assert summary[name]["seconds_per_trial"] < 1.0
    with open(tmp_path / "out" / "runs.csv", newline="", encoding="utf-8") as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 2 * 3 * 10
    # Every looked-up accuracy is the table's, and the curves never fall.
    accuracies = {r[3] for r in rows}
    assert all(float(r["accuracy"]) in accuracies for r in runs)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["random"] == \
        summary["random"]
    assert (tmp_path / "out" / "best_so_far.png").stat().st_size > 0
    # The same seeds give the same runs.
    again = race.race(path, ["evolution"], trials=10, seeds=3, log=None)["evolution"]
    assert again.pop("seconds_per_trial") > 0
    assert again == {k: v for k, v in summary["evolution"].items() if k != "seconds_per_trial"}


def test_the_shipped_table_is_a_whole_space_of_real_trainings():
    decisions, rows = race.read_table(race.TINY_TABLE)
    assert len(rows) == int(np.prod([len(v) for v in decisions.values()]))
    values = np.array(list(rows.values()))
    assert 0.1 < values.min() < values.max() < 1.0 and np.ptp(values) > 0.02


def test_the_shipped_nasbench201_table_is_a_whole_subspace_with_proxy_columns():
    decisions, rows, scored = race.read_table(race.NASBENCH201_3OPS_TABLE,
                                              ["naswot", "synflow", "jacob_cov"])
    assert len(decisions) == 6 and len(rows) == 3 ** 6 == len(scored)
    assert all(v == ["none", "nor_conv_3x3", "skip_connect"] for v in decisions.values())
    # A cell of "none" edges passes nothing from its input: chance accuracy, the lowest
    # jacob_cov; the best cells have convolutions.
    cut = ("none",) * 6
    assert rows[cut] == pytest.approx(0.1) and scored[cut]["jacob_cov"] == -np.inf
    best = max(rows, key=rows.get)
    assert "nor_conv_3x3" in best and rows[best] > 0.3 > np.median(list(rows.values()))


@pytest.mark.parametrize("rows, header, message", [
    ([[1, 0.5]], ("a", "acc"), "needs decision columns and an 'accuracy' column"),
    ([[1, "high"]], ("a", "accuracy"), "line 2: accuracy 'high' is not a number"),
    ([], ("a", "accuracy"), "has no rows"),
])
def test_bad_tables_are_one_line_errors(tmp_path, rows, header, message):
    path = _write_table(tmp_path / "bad.csv", rows, header)
    with pytest.raises(race.TableError, match=message):
        race.read_table(path)
    with pytest.raises(race.TableError, match="Cannot read the table"):
        race.read_table(str(tmp_path / "missing.csv"))


def test_a_json_table_reads_as_its_csv_form(table, tmp_path):
    path, rows = table
    records = [{"a": a, "b": b, "op": op, "accuracy": acc, "parameters": p}
               for a, b, op, acc, p in rows]
    (tmp_path / "table.json").write_text(json.dumps(records))
    assert race.read_table(str(tmp_path / "table.json")) == race.read_table(path)
    for content, message in (("[1, 2]", "a JSON table is a list of objects"),
                             ("{", "is not JSON"),
                             (json.dumps([{"a": 1, "accuracy": 0.5}, {"accuracy": 0.4, "a": 2}]),
                              "row 2: keys"),
                             (json.dumps([{"a": 1, "accuracy": "high"}]),
                              "row 1: accuracy 'high' is not a number")):
        (tmp_path / "bad.json").write_text(content)
        with pytest.raises(race.TableError, match=message):
            race.read_table(str(tmp_path / "bad.json"))


def test_tfnas_race_command(cli, table, tmp_path):
    path, _ = table
    out = tmp_path / "race"
    result = cli("race", f"--table={path}", "--oracles=random,evolution", "--trials=8",
                 "--seeds=2", f"--out={out}")
    assert result.returncode == 0, result.stderr
    assert "evolution: " in result.stdout and (out / "summary.json").exists()
    again = cli("race", f"--table={path}", "--trials=8", "--seeds=2", f"--out={out}")
    assert again.returncode == 2 and "exists; name a new directory" in again.stderr
    # `benchmark-search`: the same command by the name the issue gave it.
    alias = cli("benchmark-search", f"--table={path}", "--oracles=random", "--trials=4",
                "--seeds=1")
    assert alias.returncode == 0 and "random: " in alias.stdout, alias.stderr
    bad = cli("race", f"--table={path}", "--oracles=random,annealing")
    assert bad.returncode == 2 and "--oracles takes some of" in bad.stderr
    # Any column after accuracy can rank the warm start (here the parameter count).
    warm = cli("race", f"--table={path}", "--oracles=random", "--trials=3", "--seeds=1",
               "--warm_start=parameters", "--warm_start_candidates=18",
               "--warm_start_trials=2", f"--out={tmp_path / 'warm'}")
    assert warm.returncode == 0, warm.stderr
    summary = json.loads((tmp_path / "warm" / "summary.json").read_text())
    assert summary["warm_start"] == {"proxy": ["parameters"], "candidates": 18, "trials": 2,
                                     "mutations": 1}
    for flag, message in (("--warm_start=naswot", "no column 'naswot' after 'accuracy'"),
                          ("--warm_start_trials=0", "are at least 1")):
        bad = cli("race", f"--table={path}", "--trials=3", "--seeds=1", flag)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr


def test_a_warm_started_race_trains_the_proxys_best_first(tmp_path):
    # A proxy column that ranks the architectures exactly as their accuracy does: every
    # warm-started oracle's first trial is the best of the candidates drawn for its seed.
    rows = [[a, b, op, acc, 100 * a, 10 * acc + (a == 4)]
            for (a, b, op), acc in zip(itertools.product([1, 2, 4], [0, 1], ["c", "p", "s"]),
                                       np.linspace(0.3, 0.9, 18))]
    path = _write_table(tmp_path / "t.csv", rows,
                        ("a", "b", "op", "accuracy", "parameters", "oracle_proxy"))
    warm = {"proxy": "oracle_proxy", "candidates": 18, "trials": 3}
    summary = race.race(path, ["random", "evolution", "enas"], trials=5, seeds=2,
                        out=str(tmp_path / "out"), log=None, warm_start=warm)
    assert summary["warm_start"] == {"proxy": ["oracle_proxy"], "candidates": 18, "trials": 3,
                                     "mutations": 1}
    with open(tmp_path / "out" / "runs.csv", newline="", encoding="utf-8") as f:
        runs = list(csv.DictReader(f))
    firsts = {(r["oracle"], r["seed"]): [] for r in runs}
    for r in runs:
        firsts[(r["oracle"], r["seed"])].append(float(r["accuracy"]))
    # The proxy's three best (every candidate drawn): the three with a == 4 and the highest
    # accuracy among them; a one-column "vote" keeps the column's order.
    best = sorted((r[3] for r in rows if r[0] == 4), reverse=True)[:3]
    for accuracies in firsts.values():
        assert accuracies[:3] == pytest.approx(best)
    for name in ("random", "evolution", "enas"):
        assert summary[name]["trials_to_top_1_mean"] == 1
    # Evolution ranking 3 children a trial by the proxy column (population 10 of 18 rows).
    ranked = race.race(path, ["evolution"], trials=14, seeds=1, log=None,
                       warm_start={**warm, "mutations": 3})
    assert ranked["warm_start"]["mutations"] == 3
    assert ranked["evolution"]["trials_to_top_1_mean"] == 1
    values = race.warm_start_values(*race.read_table(path, ["oracle_proxy"])[::2],
                                    ["oracle_proxy"], 6, 2, seed=0)
    assert len(values) == 2 and set(values[0]) == {"a", "b", "op"}
    with pytest.raises(race.TableError, match="no column 'synflow' after 'accuracy'"):
        race.race(path, ["random"], trials=2, seeds=1, log=None,
                  warm_start={"proxy": "synflow"})
    with pytest.raises(race.TableError, match="warm_start takes proxy, candidates, trials"):
        race.race(path, ["random"], trials=2, seeds=1, log=None, warm_start={"proxies": "x"})
