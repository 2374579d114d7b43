"""benchmark_model over adb: a stand-in adb on PATH forwards to a folder that plays the
phone, and a stand-in benchmark_model really runs the model with LiteRT on this host and
prints benchmark_model's log. Parsing and orchestration are tfnas's own, unchanged."""

import json
import os
import stat
import sys
import textwrap

import keras
import numpy as np
import pytest

from tfnas import deploy
from tfnas.deploy.android import (AndroidBenchmark, AndroidBenchmarkError,
                                  parse_benchmark_output)

CURRENT = """INFO: STARTING!
INFO: The input model file size (MB): 24.6229
INFO: Initialized session in 119.515ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=9 first=87112 curr=56012 min=52011 max=87112 avg=58147.4 std=10650 p5=52011 median=55003 p95=87112
INFO: Running benchmark for at least 1000 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=1000 first=52162 curr=49785 min=49088 max=686105 avg=63743.2 std=60716 p5=49620 median=51891 p95=68628
INFO: Inference timings in us: Init: 119515, First inference: 87112, Warmup (avg): 58147.4, Inference (avg): 63743.2
INFO: Memory footprint delta from the start of the tool (MB): init=55.4961 overall=55.4961
"""

LEGACY = """STARTING!
Average inference timings in us: Warmup: 58147.4, Init: 119515, Inference: 63743.2
"""


def test_parser_reads_the_current_format():
    r = parse_benchmark_output(CURRENT)
    assert r["num_runs"] == 1000
    assert r["min_ms"] == pytest.approx(49.088) and r["median_ms"] == pytest.approx(51.891)
    assert r["mean_ms"] == pytest.approx(63.7432) and r["p95_ms"] == pytest.approx(68.628)
    assert r["warmup_mean_ms"] == pytest.approx(58.1474)
    assert r["init_ms"] == pytest.approx(119.515) and r["model_mb"] == pytest.approx(24.6229)
    assert r["memory_overall_mb"] == pytest.approx(55.4961)


def test_parser_reads_the_legacy_format():
    r = parse_benchmark_output(LEGACY)
    assert r["mean_ms"] == pytest.approx(63.7432)
    assert r["init_ms"] == pytest.approx(119.515)
    assert r["warmup_mean_ms"] == pytest.approx(58.1474)
    assert r["median_ms"] is None  # legacy builds print averages only


def test_parser_rejects_output_without_timings():
    with pytest.raises(AndroidBenchmarkError, match="No timings found.*STARTING"):
        parse_benchmark_output("STARTING!\nGraph: [x.tflite]\n")


def test_a_failed_run_names_the_tools_own_error():
    with pytest.raises(AndroidBenchmarkError, match="benchmark_model failed: Could not open"):
        parse_benchmark_output("ERROR: Could not open 'x.tflite'.\nBenchmarking failed.")


def test_the_parser_takes_bytes_and_refuses_negative_times():
    log = b"INFO: count=20 first=210 curr=200 min=190 max=230 avg=205.5 std=9\n"
    assert parse_benchmark_output(log)["mean_ms"] == 0.2055
    with pytest.raises(AndroidBenchmarkError, match="negative times .*mean_ms"):
        parse_benchmark_output("count=25 first=3 curr=-2 min=-4 max=5 avg=-2 std=1")
    with pytest.raises(TypeError, match="str or bytes"):
        parse_benchmark_output(42)


FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "benchmark_model")
with open(os.path.join(FIXTURES, "expected.json"), encoding="utf-8") as _f:
    EXPECTED = json.load(_f)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parser_reads_real_logs_of_every_variant(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        text = f.read()
    expected = EXPECTED[name]
    if "error" in expected:
        with pytest.raises(AndroidBenchmarkError) as err:
            parse_benchmark_output(text)
        assert str(err.value) == expected["error"]
        return
    result = parse_benchmark_output(text)
    for key, value in expected.items():
        assert result[key] == (pytest.approx(value, abs=1e-4)
                               if isinstance(value, float) else value), key
    # What the log does not print is None, never a made-up 0.0.
    assert all(v is None or v != 0.0 or k.startswith("memory_init")
               for k, v in result.items())


STAND_IN_ADB = """#!{python}
import os, shutil, subprocess, sys
root = os.environ["FAKE_PHONE_ROOT"]
args = sys.argv[1:]
if args[:1] == ["-s"]:
    if args[1] != os.environ.get("FAKE_PHONE_SERIAL"):
        print("error: device '%s' not found" % args[1], file=sys.stderr); sys.exit(1)
    args = args[2:]
local = lambda p: root + p if p.startswith("/") else p
if args[0] == "get-state":
    if os.environ.get("FAKE_PHONE_OFFLINE"):
        print("error: no devices/emulators found", file=sys.stderr); sys.exit(1)
    print("device")
elif args[0] == "push":
    os.makedirs(os.path.dirname(local(args[2])), exist_ok=True)
    shutil.copy(args[1], local(args[2]))
elif args[0] == "pull":
    shutil.copy(local(args[1]), args[2])
elif args[0] == "shell":
    line = " ".join(args[1:]).replace("/data/local/tmp", root + "/data/local/tmp")
    sys.exit(subprocess.call(line, shell=True))
"""

STAND_IN_BENCHMARK_MODEL = """#!{python}
import os, sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter
flags = dict(a[2:].split("=", 1) for a in sys.argv[1:])
path = flags["graph"]
it = Interpreter(model_path=path, num_threads=int(flags["num_threads"]))
it.allocate_tensors()
d = it.get_input_details()[0]
it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
def timed(n):
    out = []
    for _ in range(n):
        t = time.perf_counter(); it.invoke(); out.append(1e6 * (time.perf_counter() - t))
    return np.array(out)
def line(t):
    return ("count=%d first=%d curr=%d min=%d max=%d avg=%.1f std=%d p5=%d median=%d p95=%d"
            % (len(t), t[0], t[-1], t.min(), t.max(), t.mean(), t.std(),
               np.percentile(t, 5), np.median(t), np.percentile(t, 95)))
print("INFO: The input model file size (MB): %.4f" % (os.path.getsize(path) / 1e6))
warm, runs = timed(int(flags["warmup_runs"])), timed(int(flags["num_runs"]))
if os.environ.get("FAKE_BENCHMARK_LEGACY"):
    print("Average inference timings in us: Warmup: %.1f, Init: 1000, Inference: %.1f"
          % (warm.mean(), runs.mean()))
else:
    print("INFO: " + line(warm))
    print("INFO: " + line(runs))
    print("INFO: Inference timings in us: Init: 1000, First inference: %d, Warmup (avg): %.1f, "
          "Inference (avg): %.1f" % (warm[0], warm.mean(), runs.mean()))
if flags.get("enable_op_profiling") == "true" and "profiling_output_csv_file" in flags:
    with open(flags["profiling_output_csv_file"], "w") as f:
        f.write("node type,count\\n")
        for op in sorted({o["op_name"] for o in it._get_ops_details()}):
            f.write(op + ",1\\n")
"""


def _script(path, text):
    path.write_text(textwrap.dedent(text).replace("{python}", sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


@pytest.fixture
def phone(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "adb", STAND_IN_ADB)
    binary = _script(tmp_path / "benchmark_model", STAND_IN_BENCHMARK_MODEL)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_PHONE_ROOT", str(tmp_path / "phone"))
    monkeypatch.setenv("FAKE_PHONE_SERIAL", "R58M123")
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(
        keras.layers.Conv2D(4, 3)(inputs))))
    saved = deploy.export_saved_model(model, str(tmp_path / "sm"))
    tflite = deploy.convert(saved, str(tmp_path / "model.tflite"))
    return binary, tflite, tmp_path


def test_adb_runner_end_to_end(phone):
    binary, tflite, tmp_path = phone
    bench = AndroidBenchmark(binary, serial="R58M123")
    result = bench.run(tflite, num_threads=2, num_runs=20, warmup_runs=3,
                       enable_op_profiling=True, profile_out=str(tmp_path / "ops.csv"))
    assert result["num_runs"] == 20 and result["device"] == "android"
    assert 0 < result["min_ms"] <= result["median_ms"]
    assert result["num_threads"] == 2 and result["serial"] == "R58M123"
    assert "CONV_2D" in (tmp_path / "ops.csv").read_text()
    assert (tmp_path / "phone" / "data" / "local" / "tmp" / "model.tflite").exists()


def test_adb_runner_with_a_legacy_binary(phone, monkeypatch):
    binary, tflite, _ = phone
    monkeypatch.setenv("FAKE_BENCHMARK_LEGACY", "1")
    result = AndroidBenchmark(binary, serial="R58M123").run(tflite, num_runs=5)
    assert result["mean_ms"] > 0 and result["median_ms"] is None


def test_unreachable_device_and_missing_adb_are_clear_errors(phone, monkeypatch):
    binary, tflite, _ = phone
    with pytest.raises(AndroidBenchmarkError, match="Cannot reach device WRONG"):
        AndroidBenchmark(binary, serial="WRONG").run(tflite)
    monkeypatch.setenv("FAKE_PHONE_OFFLINE", "1")
    with pytest.raises(AndroidBenchmarkError, match="USB debugging"):
        AndroidBenchmark(binary).run(tflite)
    with pytest.raises(AndroidBenchmarkError, match="adb not found"):
        AndroidBenchmark(binary, adb="adb-that-does-not-exist")
    with pytest.raises(AndroidBenchmarkError, match="benchmark_model binary not found"):
        AndroidBenchmark("/nonexistent/benchmark_model")
