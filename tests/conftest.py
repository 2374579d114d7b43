import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

from tfnas import determinism  # noqa: E402

# As `tfnas` runs by default ("deterministic": true): without Grappler's memory optimizer.
determinism.configure(True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A GRUNAS space small enough to search in seconds on a CPU.
TINY_SPACE = {"widths": [[12, 24], [24, 24], [24, 48], [48, 48]], "candidates": [1, 2, 4]}


# The longest modules, longest first (pytest --durations, summed per module). pytest-xdist's
# loadscope hands whole modules to its two workers in collection order: started last, a long
# module ran alone for minutes at the end of the suite while the other worker sat idle.
LONGEST_FIRST = ("test_distribute_methods", "test_darts", "test_resume", "test_search",
                 "test_distribute", "test_cli", "test_dca", "test_enas_micro",
                 "test_shufflenasnet", "test_enas_method", "test_compaction", "test_enas_oracle",
                 "test_latency", "test_lowering", "test_tuner", "test_qat", "test_nasbench201",
                 "test_quantize")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__, len(rank)))  # stable


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield
    # Without the full garbage collection Keras adds (free_memory): it walked every object
    # of the worker after every test, 256 s of the suite's 1,580 s of CPU, 43 s after one
    # ENAS test; Python's own collector still runs.
    keras.backend.clear_session(free_memory=False)


def counting_search_model():
    """A `SearchModel` subclass whose `traces` counts how often its train step is traced
    (`fit` traces it once per phase: weights, architecture)."""
    from tfnas import SearchModel  # pylint: disable=import-outside-toplevel

    class CountingSearchModel(SearchModel):
        traces = 0

        def train_step(self, data):
            CountingSearchModel.traces += 1  # Python runs only while tracing
            return super().train_step(data)
    return CountingSearchModel


def enas_search(path, recipe, overrides):
    """A small ENAS search of `configs/<recipe>` through the pipeline, as `tfnas search`
    runs it: `(config, architecture, supernet, trials.json rows)`."""
    import json  # pylint: disable=import-outside-toplevel

    from tfnas import pipeline  # pylint: disable=import-outside-toplevel
    from tfnas.config import load_config  # pylint: disable=import-outside-toplevel
    from tfnas.run_dir import RunDirectory  # pylint: disable=import-outside-toplevel

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = load_config(os.path.join(root, "configs", recipe), [
        "data.limit=96", "data.batch_size=32",
        'search.controller={"learning_rate": 0.05, "samples_per_update": 3}', *overrides])
    run = RunDirectory(str(path))
    run.save_config(config)
    arch, supernet = pipeline.search(config, run, verbose=0)
    with open(run.file("logs", "trials.json"), encoding="utf-8") as f:
        return config, arch, supernet, json.load(f)


def assert_trains_and_exports(model, tmp_path, ops, qat=True):
    """`model` (16x16 images) trains a step, converts to float32 and int8 TFLite with
    built-in ops only, among them `ops`, runs in LiteRT, and (with `qat`; 20 s of a cell
    network's test) converts through native QAT to an int8 model."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfnas import deploy  # pylint: disable=import-outside-toplevel
    from tfnas.deploy import quantize  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (32, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 10, 32)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(before, model.trainable_weights))
    saved = deploy.export_saved_model(model, str(tmp_path / "sm"))
    for mode in ("float32", "int8"):
        path = deploy.convert(saved, str(tmp_path / f"{mode}.tflite"), mode,
                              representative_data=[x], calibration_steps=16)
        found = set(deploy.op_names(path))
        assert not any(op.startswith("Flex") for op in found), found
        assert set(ops) <= found
        assert np.asarray(deploy.Runner(path)(x[0])).size == 10
    if not qat:
        return
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    qat, _, _ = quantize.train_and_convert(model, data, str(tmp_path / "qat.tflite"), epochs=0,
                                           representative_data=[x], calibration_steps=16)
    assert deploy.interpreter(qat).get_input_details()[0]["dtype"] == np.int8


def replica_runs(out, group, overrides):
    """What `tests/distributed_runs.py` gives for `group` run on one and on two replicas."""
    import json  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, os.path.join(root, "tests", "distributed_runs.py"),
                             str(out), group, *overrides], capture_output=True, text=True,
                            cwd=root, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        return json.load(f)


def history_rows(path):
    """The rows of a Keras CSV log as dicts."""
    import csv  # pylint: disable=import-outside-toplevel

    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def loss_columns(rows, keys=("loss", "cross_entropy", "arch_loss", "accuracy",
                             "expected_cost")):
    """The columns `keys` (those present) of log rows as a float array."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    return np.array([[float(r[k]) for k in keys if k in r] for r in rows])


@pytest.fixture
def cli(monkeypatch, capsys):
    """`cli(*args, cwd=None)`: the command run by the CLI's own `main` in this process (no
    interpreter and TensorFlow start-up per call); `returncode`, `stdout`, `stderr` as
    a subprocess gives them. The real entry point runs as a subprocess in
    test_cli.py's `finished_run` and `test_bad_input_is_a_clear_error`."""
    import types  # pylint: disable=import-outside-toplevel

    def run(*args, cwd=None):
        code, _ = cli_in_process(list(args), cwd or ROOT, monkeypatch, capsys, keep=True)
        out = capsys.readouterr()
        return types.SimpleNamespace(returncode=code or 0, stdout=out.out, stderr=out.err)
    return run


def cli_in_process(args, cwd, monkeypatch, capsys, keep=False):
    """`tfnas *args` run by the CLI's `main` in this process, in `cwd`: its exit code and
    (unless `keep`) what it wrote to stderr."""
    import warnings  # pylint: disable=import-outside-toplevel

    from tfnas import cli, quiet  # pylint: disable=import-outside-toplevel

    monkeypatch.chdir(cwd)
    capsys.readouterr()
    try:
        with warnings.catch_warnings():
            cli.FLAGS.unparse_flags()
            code = cli.main(cli.FLAGS(["tfnas", *args]))
    finally:
        cli.FLAGS.unparse_flags()
        quiet.enable(False)
    if keep:  # the caller reads both streams
        return code, None
    return code, capsys.readouterr().err
