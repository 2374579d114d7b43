"""tf.distribute: two replicas and two worker processes search and retrain what one does.

The two-replica run is MirroredStrategy over two logical CPU devices (the other methods:
tests/test_distribute_methods.py); the two workers are `tfnas search` processes on 127.0.0.1
under MultiWorkerMirroredStrategy (TF_CONFIG), one of them killed with SIGKILL and restarted.
"""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import history_rows as _rows
from conftest import loss_columns as _losses
from conftest import replica_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.json")
# A global batch of 32: 2 weight and 2 architecture batches per search epoch, one block
# (tracing under MirroredStrategy is most of the time).
SMALL = ["search.epochs=2", "search.warmup_epochs=0", "train.epochs=1", "data.limit=64",
         "data.batch_size=32", "space.config.widths=[[12,24]]", "export.formats=[]"]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    return replica_runs(tmp_path_factory.mktemp("replicas"), "searches", SMALL)


def test_two_replicas_search_and_retrain_like_one(replicas):
    one, two = replicas["null"], replicas["mirrored"]
    assert two["choices"] == one["choices"]
    for block, probs in one["probabilities"].items():
        # Adam's first steps move each logit by about its learning rate whatever the
        # gradient's size, so float differences in small gradients show here most.
        np.testing.assert_allclose(two["probabilities"][block], probs, atol=1e-3)
    # Same global batch and seed: the same losses, up to the order of float additions.
    np.testing.assert_allclose(_losses(two["search_history"]), _losses(one["search_history"]),
                               rtol=1e-4)
    np.testing.assert_allclose(_losses(two["train_history"]), _losses(one["train_history"]),
                               rtol=1e-4)
    assert two["test_loss"] == pytest.approx(one["test_loss"], rel=1e-4)


def test_two_replicas_compact_like_one(replicas):
    one, two = replicas["compaction_null"], replicas["compaction_mirrored"]
    assert two["choices"] == one["choices"] and two["macs"] == one["macs"]
    # Two training stages in a row (SGD at 0.05 on a ResNet): differences of 1e-4 seen.
    for a, b in zip(two["history"], one["history"]):
        np.testing.assert_allclose(_losses(a, ("loss", "accuracy", "regularizer")),
                                   _losses(b, ("loss", "accuracy", "regularizer")), rtol=1e-3)


def _free_ports(n):
    """`n` free ports below the kernel's ephemeral range (32768 up on Linux), which bind(0)
    and outgoing connections draw from: a port the test releases for a restarted worker
    is then not handed to another process meanwhile."""
    ports, rng = [], random.Random()
    while len(ports) < n:
        port = rng.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports


def _start_workers(run_dir, ports, *flags, indices=None):
    """`tfnas search` processes of a cluster on 127.0.0.1, one per port, or only those of
    the task `indices`."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    args = ["search", "--config", QUICKSTART, "--strategy", "multi_worker", "--run_dir",
            str(run_dir), "--verbose=0", *flags]
    for item in SMALL:
        args += ["--set", item]
    procs = []
    for index in range(len(ports)) if indices is None else indices:
        env = {**os.environ, "TF_CONFIG": json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen([sys.executable, "-m", "tfnas.cli", *args], cwd=ROOT,
                                      env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    return procs


def _epochs_backed_up(run_dir):
    try:
        with open(run_dir / "checkpoints" / "search" / "state.json", encoding="utf-8") as f:
            return json.load(f)["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def test_a_killed_worker_restarted_alone_ends_like_one_process(replicas, tmp_path):
    run_dir = tmp_path / "cluster"
    ports = _free_ports(2)
    procs = _start_workers(run_dir, ports)
    deadline = time.time() + 300
    while time.time() < deadline and _epochs_backed_up(run_dir) < 1 and \
            all(p.poll() is None for p in procs):
        time.sleep(0.05)
    assert all(p.poll() is None for p in procs), procs[0].communicate()[0][-3000:]
    saved = _epochs_backed_up(run_dir)
    procs[1].send_signal(signal.SIGKILL)
    procs[1].wait()
    assert saved == 1 and not (run_dir / "architecture.json").exists()
    # The chief's collectives are aborted once TensorFlow sees the worker gone (its
    # heartbeats stop); it restarts itself (distribute.rejoin) and waits for the worker.
    # Only the killed worker is restarted, after that, as a machine back some time later.
    chief = []
    for line in procs[0].stdout:  # ends early if the chief exits instead
        chief.append(line)
        if "a peer of the cluster stopped" in line:
            break
    procs[1], = _start_workers(run_dir, ports, "--resume", indices=[1])
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    outputs[0] = "".join(chief) + outputs[0]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "a peer of the cluster stopped; restarting this process to wait for it and " \
           "resume from the last backup (rejoin 1 of 3)." in outputs[0]
    assert f"the search continues from epoch {saved + 1}" in outputs[0]
    # The chief's directory holds the run; the other worker's is gone.
    assert not os.path.exists(f"{run_dir}.worker-1")
    arch = json.loads((run_dir / "architecture.json").read_text())
    one = replicas["null"]
    assert arch["choices"] == one["choices"]
    for block, probs in one["probabilities"].items():
        np.testing.assert_allclose(arch["probabilities"][block], probs, atol=1e-3)
    np.testing.assert_allclose(_losses(_rows(run_dir / "logs" / "search_history.csv")),
                               _losses(one["search_history"]), rtol=1e-4)


def test_bad_distribute_input_is_a_clear_error(monkeypatch):
    from tfnas import distribute
    from tfnas.config import load_config
    from tfnas.errors import ConfigError

    with pytest.raises(ConfigError, match=r"distribute.strategy: 'horovod' is not one of "
                                          r"\[None, 'mirrored', 'multi_worker'\]"):
        load_config(QUICKSTART, ["distribute.strategy=horovod"])
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="'multi_worker' needs TF_CONFIG"):
        distribute.strategy({"strategy": "multi_worker"})
    monkeypatch.setenv("TF_CONFIG", "{cluster")
    with pytest.raises(ConfigError, match="TF_CONFIG is not valid JSON"):
        distribute.strategy({"strategy": "multi_worker", "devices": None})
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
         "task": {"type": "worker", "index": 5}}))
    with pytest.raises(ConfigError, match="task.index 5 is not a worker of the cluster, which "
                                          "has 2 \\(indices 0 to 1\\)"):
        distribute.strategy({"strategy": "multi_worker"})
    monkeypatch.delenv("TF_CONFIG")
    with pytest.raises(ConfigError, match="distribute.devices: /gpu:7 is not a device of this "
                                          "machine \\(it has /cpu:0"):
        distribute.strategy({"strategy": "mirrored", "devices": ["/gpu:7"]})
    with pytest.raises(ConfigError, match="'my-gpu' is not a device name"):
        distribute.strategy({"strategy": "mirrored", "devices": ["my-gpu"]})
    import tensorflow as tf

    have = len(tf.config.list_logical_devices("CPU"))  # TensorFlow's runtime has started
    with pytest.raises(ConfigError, match=f"logical_cpus is {have + 1}, but TensorFlow "
                                          f"started with {have} CPU devices"):
        distribute.strategy({"strategy": "mirrored", "logical_cpus": have + 1})


def test_multi_worker_without_a_run_directory_is_refused_before_anything_runs(
        tmp_path, monkeypatch, capsys):
    # Checked before the strategy is made and before anything is written (in this process:
    # no cluster is started).
    from tfnas import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
         "task": {"type": "worker", "index": 0}}))
    cli.FLAGS.unparse_flags()
    code = cli.main(cli.FLAGS(["tfnas", "search", "--config", QUICKSTART, "--strategy",
                               "multi_worker"]))
    cli.FLAGS.unparse_flags()
    assert code == 2 and list(tmp_path.iterdir()) == []
    assert capsys.readouterr().err.strip() == (
        "tfnas search: error: distribute.strategy 'multi_worker' needs --run_dir: every "
        "worker of the cluster names the same run.")


def test_a_worker_whose_port_is_taken_says_so_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": json.dumps(
            {"cluster": {"worker": [f"127.0.0.1:{port}", "127.0.0.1:1"]},
             "task": {"type": "worker", "index": 0}})}
        result = subprocess.run(
            [sys.executable, "-m", "tfnas.cli", "search", "--config", QUICKSTART, "--strategy",
             "multi_worker", "--run_dir", str(tmp_path / "r")], capture_output=True, text=True,
            env=env, cwd=ROOT, timeout=300, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        f"tfnas search: error: TF_CONFIG gives this process the address 127.0.0.1:{port}, and "
        "its port is in use by another process: stop that process (an earlier run of this "
        "worker?) or give this task a free port in TF_CONFIG."]
    assert not (tmp_path / "r").exists()


def test_a_process_that_has_rejoined_enough_times_exits_with_one_line(monkeypatch, capsys):
    import tensorflow as tf

    from tfnas import cli

    monkeypatch.setattr(cli, "_REJOINS_LEFT", 0)
    monkeypatch.setenv("TFNAS_REJOINED", "3")
    err = tf.errors.UnavailableError(None, None, "Collective ops is aborted by: task 1 is down")
    reason = cli._rejoin_reason(err)
    assert reason == "a peer of the cluster stopped" and cli._rejoin_reason(ValueError()) is None
    assert cli._rejoin("search", err, reason) == 1
    assert capsys.readouterr().err.strip() == (
        "tfnas search: error: a peer of the cluster stopped (Collective ops is aborted by: "
        "task 1 is down) and this process has rejoined 3 times (distribute.rejoin); restart "
        "every process with --resume.")
