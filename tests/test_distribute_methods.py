"""tf.distribute: DCA-NAS, ENAS, binary-gate and keras-tuner searches on two replicas
(MirroredStrategy over two logical CPU devices) against one."""

import numpy as np
import pytest

from conftest import loss_columns as _losses
from conftest import replica_runs
from test_distribute import SMALL


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    return replica_runs(tmp_path_factory.mktemp("replicas"), "methods", SMALL)


def test_a_lagrangian_search_on_two_replicas_steps_like_one(replicas):
    # Rematerialized on two replicas: the same steps, up to the order in which the
    # recomputed gradients add up (float32).
    one, two = replicas["dca_null"], replicas["dca_mirrored"]
    keys = ("loss", "arch_loss", "lagrange_multiplier", "expected_cost")
    np.testing.assert_allclose(_losses(two, keys), _losses(one, keys), rtol=1e-4)
    assert float(one[0]["lagrange_multiplier"]) > 0  # the budget is violated: λ rose


def test_one_path_and_tuner_searches_run_on_two_replicas(replicas):
    # Batch norms inside the one-path candidates keep per-replica statistics (a collective
    # cannot sit in the conditional that picks the candidate), so the runs agree only
    # within that noise: the same sampled architectures and result, rewards of the 32
    # validation images within two images, probabilities within 1e-2.
    one, two = replicas["enas_null"], replicas["enas_mirrored"]
    assert [t["choices"] for t in two["trials"]] == [t["choices"] for t in one["trials"]]
    assert all(t["status"] == "COMPLETED" for t in two["trials"])
    np.testing.assert_allclose([t["reward"] for t in two["trials"]],
                               [t["reward"] for t in one["trials"]], atol=2 / 32 + 1e-6)
    assert two["choices"] == one["choices"]
    one, two = replicas["binary_null"], replicas["binary_mirrored"]
    assert two["choices"] == one["choices"]
    for block, probs in one["probabilities"].items():
        np.testing.assert_allclose(two["probabilities"][block], probs, atol=1e-2)
    # keras-tuner trials: plain networks with synchronized batch norms, so float precision.
    one, two = replicas["tuner_null"], replicas["tuner_mirrored"]
    assert [t["choices"] for t in two["trials"]] == [t["choices"] for t in one["trials"]]
    for a, b in zip(two["trials"], one["trials"]):
        assert a["metrics"]["loss"] == pytest.approx(b["metrics"]["loss"], rel=1e-4)
        assert a["metrics"]["val_loss"] == pytest.approx(b["metrics"]["val_loss"], rel=1e-4)
    assert two["choices"] == one["choices"]
    assert replicas["enas_call_refused"] == (
        'The supernet\'s mixed ops (ChosenPathMixing) run their candidate as a function call '
        '("reproducible": true), which does not run across replicas under tf.distribute; set '
        '"reproducible": false (the default), or search on one device.')
