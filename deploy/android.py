"""TFLite `benchmark_model` on an Android device over adb, and its output parser.

    bench = AndroidBenchmark("path/to/benchmark_model", serial="R58M123")
    result = bench.run("model_int8.tflite", num_threads=4, use_xnnpack=True)

`result` has the keys of the host benchmark (`min_ms`, `median_ms`, `mean_ms`,
`num_runs`, ...) plus what `benchmark_model` reports besides (p5/p95, init
time, memory).
"""

import os
import re
import shlex
import shutil
import subprocess

from tfnas.errors import TfnasError

DEVICE_DIR = "/data/local/tmp"


class AndroidBenchmarkError(TfnasError, RuntimeError):
    """adb, the device or benchmark_model is missing or failed."""


_NUMBER = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
# What a line may carry in front of benchmark_model's own text: "INFO: " (current
# builds), a logcat prefix ("05-31 10:31:13.022 21767 21767 I tflite  : ", the
# benchmark APK), or an iOS log prefix ("2020-10-28 14:41:14.151361+0800 App[39:93] ").
_PREFIX = re.compile(
    r"^(?:\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+[VDIWEF]\s+[\w.]+\s*:\s?"
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+[+-]\d{4} \S+\[\d+:\d+\] )?"
    r"(?:(INFO|WARNING|ERROR|VERBOSE): )?")
_FAILURE = re.compile(r"Benchmarking failed|Failed to (?:apply|initialize|allocate|invoke)|"
                      r"failed to prepare|Failed to build program|Aborted|Segmentation fault",
                      re.IGNORECASE)


def _fields(line):
    return {k: float(v) for k, v in re.findall(r"(\w+)=" + _NUMBER, line)}


def _lines(text):
    """benchmark_model's lines without their log prefixes, each with its level."""
    out = []
    for raw in text.splitlines():
        match = _PREFIX.match(raw)
        out.append((match.group(1) or "", raw[match.end():].rstrip()))
    return out


def _failure(lines):
    errors = [line for level, line in lines if level == "ERROR" or _FAILURE.search(line)]
    if not errors:
        return None
    causes = [e for e in errors if "Benchmarking failed" not in e] or errors
    return "; ".join(dict.fromkeys(causes))[:1000]


def parse_op_profile(text):
    """`{node type: {"count", "avg_ms", "percent"}}` from the op profiler's summary.

    benchmark_model with `--enable_op_profiling` prints a "Summary by node type"
    table for the initialization and one for the regular runs; the last one
    (the runs) is returned, or None when the log has none.
    """
    last, rows = None, None
    for _, line in _lines(text):
        if "Summary by node type" in line:
            last = rows = {}
            continue
        cells = line.split()
        if rows is None or (cells and cells[0].startswith("[")):
            continue
        if len(cells) >= 4 and cells[3].endswith("%"):
            rows[cells[0]] = {"count": int(cells[1]), "avg_ms": float(cells[2]),
                              "percent": float(cells[3].rstrip("%"))}
        elif rows:  # the first line after the table's rows ends it
            rows = None
    return last or None


def parse_benchmark_output(text):
    """Parses `benchmark_model`'s log into milliseconds (see `tests/fixtures/benchmark_model`).

    The timed runs are the last `count=... min=... avg=...` line that the tool
    prints for its benchmark (in microseconds); the op profiler's `Timings
    (microseconds): count=...` lines are not benchmark runs and are ignored.
    Current builds add `Inference timings in us: Init: .., First inference:
    .., Warmup (avg): .., Inference (avg): ..`; older ones print only `Average
    inference timings in us: ...`. A statistic the log does not print
    (median, percentiles, min on single-run builds) is None, never 0. Memory
    is read from `Memory footprint delta ...` or `Peak memory footprint ...`.
    With op profiling, `op_profile` holds the summary by node type. A failed
    run (`Benchmarking failed.`, a delegate that cannot prepare) raises
    `AndroidBenchmarkError` naming the tool's own error lines.
    """
    lines = _lines(text)
    failure = _failure(lines)
    stats = [_fields(line) for _, line in lines if line.startswith("count=")]
    result = {"min_ms": None, "median_ms": None, "p90_ms": None, "mean_ms": None,
              "num_runs": None, "device": "android"}

    def ms(fields, key):
        return fields[key] * 1e-3 if key in fields else None

    if stats:
        runs = stats[-1]
        result.update({"min_ms": ms(runs, "min"), "median_ms": ms(runs, "median"),
                       "mean_ms": ms(runs, "avg"), "num_runs": int(runs.get("count", 0)),
                       "max_ms": ms(runs, "max"), "std_ms": ms(runs, "std"),
                       "p5_ms": ms(runs, "p5"), "p95_ms": ms(runs, "p95"),
                       "first_ms": ms(runs, "first")})
        if result["mean_ms"] is None and runs.get("count") == 1:
            result["mean_ms"] = ms(runs, "curr")  # a single run prints only curr=
        if len(stats) > 1:
            result["warmup_mean_ms"] = ms(stats[0], "avg") or ms(stats[0], "curr")
    body = "\n".join(line for _, line in lines)
    timings = re.search(r"^Inference timings in us: (.*)", body, re.MULTILINE)
    legacy = re.search(r"^Average inference timings in us: (.*)", body, re.MULTILINE)
    if timings:
        parts = {k.strip(): float(v) for k, v in
                 re.findall(r"([A-Za-z ()]+?):\s*" + _NUMBER, timings.group(1))}
        result["init_ms"] = ms(parts, "Init")
        if result.get("first_ms") is None:
            result["first_ms"] = ms(parts, "First inference")
        if result["mean_ms"] is None:
            result["mean_ms"] = ms(parts, "Inference (avg)")
    elif legacy:
        parts = {k.strip(): float(v) for k, v in
                 re.findall(r"([A-Za-z ()]+?):\s*" + _NUMBER, legacy.group(1))}
        result["init_ms"] = ms(parts, "Init")
        result["warmup_mean_ms"] = ms(parts, "Warmup")
        if result["mean_ms"] is None:
            # Some 2019 builds label the inference average "no stats".
            result["mean_ms"] = ms(parts, "Inference") or ms(parts, "no stats")
    if failure is not None:
        raise AndroidBenchmarkError(f"benchmark_model failed: {failure}")
    if result["mean_ms"] is None:
        tail = " | ".join(line for _, line in lines if line.strip())[-500:]
        raise AndroidBenchmarkError(f"No timings found in benchmark_model's output (its last "
                                    f"lines: {tail}).")
    size = re.search(r"The input model file size \(MB\):\s*" + _NUMBER, body)
    if size:
        result["model_mb"] = float(size.group(1))
    session = re.search(r"Initialized session in\s*" + _NUMBER + "ms", body)
    if session:
        result["init_ms"] = float(session.group(1))
    memory = re.search(r"(?:Memory footprint delta|Peak memory footprint)[^:]*:\s*init="
                       + _NUMBER + r"\s+overall=" + _NUMBER, body)
    if memory:
        result["memory_init_mb"] = float(memory.group(1))
        result["memory_overall_mb"] = float(memory.group(2))
        result["memory_kind"] = "peak" if "Peak" in memory.group(0) else "delta"
    profile = parse_op_profile(text)
    if profile:
        result["op_profile"] = profile
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()}


class AndroidBenchmark:
    """Pushes a model and a user-provided `benchmark_model` binary with adb, runs, parses.

    Args:
        binary: path to an Android build of TFLite's `benchmark_model`.
        serial: the device serial (`adb devices`); required when several are attached.
        adb: the adb executable (default: `adb` on PATH).
        device_dir: a writable directory on the device.
    """

    def __init__(self, binary, serial=None, adb="adb", device_dir=DEVICE_DIR):
        self.binary = binary
        self.serial = serial
        self.adb = shutil.which(adb) or (adb if os.path.isfile(adb) else None)
        self.device_dir = device_dir.rstrip("/")
        if not os.path.isfile(binary):
            raise AndroidBenchmarkError(
                f"benchmark_model binary not found at {binary}. Download or build TFLite's "
                "benchmark_model for your phone's ABI (android_aarch64) and pass its path.")
        if self.adb is None:
            raise AndroidBenchmarkError(
                f"adb not found ({adb!r}). Install Android platform-tools and put adb on PATH, "
                "or pass its path.")

    def _adb(self, *args, check=True):
        cmd = [self.adb] + (["-s", self.serial] if self.serial else []) + list(args)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        if check and done.returncode != 0:
            raise AndroidBenchmarkError(f"`{' '.join(cmd)}` failed ({done.returncode}): "
                                        f"{(done.stderr or done.stdout).strip()[-1500:]}")
        return done.stdout

    def check_device(self):
        state = self._adb("get-state", check=False).strip()
        if state != "device":
            who = f"device {self.serial}" if self.serial else "any device"
            raise AndroidBenchmarkError(
                f"Cannot reach {who} over adb (state: {state or 'none'}). Connect the phone, "
                "enable USB debugging, accept the prompt, and check `adb devices`.")

    def command(self, graph, num_threads=4, use_gpu=False, use_xnnpack=True,
                enable_op_profiling=False, num_runs=50, warmup_runs=5, profile_csv=None):
        """The `benchmark_model` command line run on the device."""
        args = [f"{self.device_dir}/benchmark_model", f"--graph={graph}",
                f"--num_threads={num_threads}", f"--use_gpu={str(use_gpu).lower()}",
                f"--use_xnnpack={str(use_xnnpack).lower()}", f"--num_runs={num_runs}",
                f"--warmup_runs={warmup_runs}"]
        if enable_op_profiling:
            args.append("--enable_op_profiling=true")
            if profile_csv:
                args.append(f"--profiling_output_csv_file={profile_csv}")
        return " ".join(shlex.quote(a) for a in args)

    def run(self, model_path, num_threads=4, use_gpu=False, use_xnnpack=True,
            enable_op_profiling=False, num_runs=50, warmup_runs=5, profile_out=None):
        """Benchmarks `model_path` on the device; returns the parsed result.

        With `profile_out` (a local path) and `enable_op_profiling`, the op
        profile CSV is pulled there.
        """
        if not os.path.isfile(model_path):
            raise AndroidBenchmarkError(f"No model at {model_path}.")
        self.check_device()
        remote_bin = f"{self.device_dir}/benchmark_model"
        remote_model = f"{self.device_dir}/{os.path.basename(model_path)}"
        self._adb("push", self.binary, remote_bin)
        self._adb("shell", f"chmod +x {remote_bin}")
        self._adb("push", model_path, remote_model)
        profile_csv = (f"{self.device_dir}/{os.path.basename(model_path)}.profile.csv"
                       if enable_op_profiling and profile_out else None)
        output = self._adb("shell", self.command(
            remote_model, num_threads, use_gpu, use_xnnpack, enable_op_profiling, num_runs,
            warmup_runs, profile_csv))
        result = parse_benchmark_output(output)
        result.update({"num_threads": num_threads, "use_gpu": use_gpu,
                       "use_xnnpack": use_xnnpack, "warmup_runs": warmup_runs,
                       "model_bytes": os.path.getsize(model_path), "serial": self.serial})
        if profile_csv:
            self._adb("pull", profile_csv, profile_out)
            result["op_profile_csv"] = profile_out
        return result
