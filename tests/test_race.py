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


def test_tfnas_race_command(cli, table, tmp_path):
    path, _ = table
    out = tmp_path / "race"
    result = cli("race", f"--table={path}", "--oracles=random,evolution", "--trials=8",
                 "--seeds=2", f"--out={out}")
    assert result.returncode == 0, result.stderr
    assert "evolution: " in result.stdout and (out / "summary.json").exists()
    again = cli("race", f"--table={path}", "--trials=8", "--seeds=2", f"--out={out}")
    assert again.returncode == 2 and "exists; name a new directory" in again.stderr
    bad = cli("race", f"--table={path}", "--oracles=random,annealing")
    assert bad.returncode == 2 and "--oracles takes some of" in bad.stderr
