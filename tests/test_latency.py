import json
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_SPACE
from tfnas.costs import LatencyCost
from tfnas.deploy.latency import (OVERHEAD, LatencyTableError, build_table,
                                  calibrate_table, load_table, predict, save_table)
from tfnas.penalties import ProductPenalty
from tfnas.search_model import SearchModel
from tfnas.spaces import get_space


# Two blocks of TINY_SPACE's three candidates: 9 entries, each a TFLite model timed.
SPACE = {"widths": [[12, 24], [24, 48]], "candidates": TINY_SPACE["candidates"]}
CHOICES = {"unit_1": 4, "unit_2": 2}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    space = get_space("grunas", SPACE)
    scratch = tmp_path_factory.mktemp("tmp")
    saved, tempfile.tempdir = tempfile.tempdir, str(scratch)
    try:
        result = build_table(space, repeats=1, num_runs=20, warmup_runs=2, log=None)
        calibrated = calibrate_table(dict(result), space, num_networks=1)
    finally:
        tempfile.tempdir = saved
    # The helpers time models in temporary directories and remove them.
    assert [p.name for p in scratch.iterdir() if p.name.startswith("tfnas")] == []
    assert "scale" in calibrated
    return space, result


def test_table_times_every_candidate_op(table, tmp_path):
    space, t = table
    fixed, blocks = space.latency_ops()
    expected = {s for s, _ in fixed} | {s for c in blocks.values() for s, _ in c} | {OVERHEAD}
    assert set(t["entries"]) == expected
    assert "grunas_unit-input:18x18x24-output:18x18x48-groups:2" in t["entries"]
    assert all(e["count"] == 1 and e["mean"] > 0 for e in t["entries"].values())
    path = save_table(t, str(tmp_path / "lut.json"))
    assert load_table(path) == json.loads(json.dumps(t))
    with pytest.raises(FileExistsError):
        save_table(t, path)


def test_expected_latency_is_differentiable_and_matches_predictions(table):
    space, t = table
    supernet = space.build_supernet("softmax")
    cost = LatencyCost.from_table(t, space, supernet)
    choices = CHOICES
    one_hot = {b: tf.one_hot(space.candidates(b).index(c), 3) for b, c in choices.items()}
    assert float(cost(one_hot)) == pytest.approx(predict(t, space, choices), rel=1e-5)
    model = SearchModel(supernet, cost=cost, penalty=ProductPenalty(1.0, reference=0.1))
    x = np.zeros((2, 32, 32, 3), "float32")
    with tf.GradientTape() as tape:
        logits, weights = supernet(x, training=True)
        loss = model.penalty(tf.constant(1.0), cost(weights))
    grads = tape.gradient(loss, model.architecture_variables)
    assert all(float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)


def test_calibration_fits_one_scale_on_whole_networks(table):
    space, t = table
    choices = CHOICES
    raw = predict(t, space, choices)
    calibrated = calibrate_table(dict(t), space, num_networks=2, seed=3)
    assert calibrated["calibration"]["num_networks"] == 2
    assert calibrated["scale"] == pytest.approx(np.median(calibrated["calibration"]["ratios"]),
                                                rel=1e-3)
    expected = t["overhead"] + calibrated["scale"] * (raw - t["overhead"])
    assert predict(calibrated, space, choices) == pytest.approx(expected, rel=1e-6)


def test_missing_signature_and_malformed_tables_are_clear_errors(table, tmp_path):
    space, t = table
    wider = get_space("grunas", {**SPACE, "candidates": [1, 2, 3]})
    with pytest.raises(LatencyTableError, match="no entry for op .*groups:3"):
        LatencyCost.from_table(t, wider)
    with pytest.raises(LatencyTableError, match="Not a tfnas latency table"):
        load_table({"format": "x"})
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(LatencyTableError, match="Cannot read latency table"):
        load_table(str(bad))
    with pytest.raises(LatencyTableError, match="needs count, mean and var"):
        load_table({**t, "entries": {"op": {"mean": 1.0}}})
    keras.backend.clear_session()
