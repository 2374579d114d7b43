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
# What a line may carry in front of benchmark_model's own text. logcat prints one of
# several formats (`adb logcat -v FORMAT`, with modifiers such as `year`, `epoch`,
# `monotonic`, `usec`, `zone`, `uid`, `color`), and tools strip some of its columns:
#   brief       I/tflite  ( 1234): TEXT          tag        I/tflite: TEXT
#   process     I( 1234) TEXT  (tflite)          thread     I( 1234: 5678) TEXT
#   time        05-31 10:31:13.042 I/tflite  ( 1234): TEXT
#   threadtime  05-31 10:31:13.042  1234  5678 I tflite  : TEXT
#   long        [ 05-31 10:31:13.042  1234: 5678 I/tflite ]  then TEXT on its own lines
#   stripped    I tflite  : TEXT     or     tflite  : TEXT
# and then "INFO: " (builds since 2023); or an iOS log prefix
# ("2020-10-28 14:41:14.151361+0800 App[39:93] ").
_STAMP = (r"\s*(?:(?:\d{4}-)?\d\d-\d\d\s+\d\d:\d\d:\d\d(?:\.\d+)?(?:\s*[+-]\d{4})?\s+"
          r"|\d+\.\d+(?:\s*[+-]\d{4})?\s+)?"                        # date-time, epoch
          r"(?:[a-z]\w*\s+(?=\d))?"                                 # uid (u0_a123, root)
          r"(?:\d+\s+\d+\s+|\d+\s+)?")                              # pid, tid
_TAG = r"[A-Za-z_][\w.\-]*"
_LOGCAT = re.compile(
    r"^" + _STAMP + r"(?:"
    r"(?P<l1>[VDIWEFA])/(?P<t1>" + _TAG + r")\s*\(\s*\d+(?::\s*\d+)?\):\s?"  # brief, time
    r"|(?P<l2>[VDIWEFA])/(?P<t2>" + _TAG + r")\s*:\s?"                  # tag
    r"|(?P<l3>[VDIWEFA])\(\s*\d+(?::\s*\d+)?\)\s?"                 # process, thread
    r"|(?P<l4>[VDIWEFA])\s+(?P<t4>" + _TAG + r")\s*:\s?"               # threadtime
    r"|(?P<tag>tflite\w*)\s*:\s?"                                    # level stripped too
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+[+-]\d{4} \S+\[\d+:\d+\] "  # iOS
    r")")
_COLOR = re.compile(r"\x1b\[[0-9;]*m")
_LONG_HEADER = re.compile(r"^\s*\[\s+.*\s[VDIWEFA]/" + _TAG + r"\s+\]\s*$")
_PROCESS_TAG = re.compile(r"\s+\(" + _TAG + r"\)\s*$")
_LEVEL = re.compile(r"^(INFO|WARNING|ERROR|VERBOSE): ")
# The statistics of timed runs ("count=50 first=... avg=..."), wherever a line has them;
# the op profiler's "Timings (microseconds): count=..." and "Memory (bytes): count=..."
# are not benchmark runs.
_STATS = re.compile(r"(?<![\w=.])count=\d")
_PROFILER = re.compile(r"(?:Timings \(microseconds\)|Memory \(bytes\)):\s*$")
_FAILURE = re.compile(r"Benchmarking failed|Failed to (?:apply|initialize|allocate|invoke)|"
                      r"failed to prepare|Failed to build program|Aborted|Segmentation fault",
                      re.IGNORECASE)


def _fields(line):
    return {k: float(v) for k, v in re.findall(r"(\w+)=" + _NUMBER, line)}


def _strip(raw):
    """`(level, text)` of one log line without its prefixes (None for logcat's `long`
    header lines, which carry no text)."""
    line, level = _COLOR.sub("", raw).rstrip(), ""
    if _LONG_HEADER.match(line):
        return None
    match = _LOGCAT.match(line)
    if match and match.end() > 0:
        if match.group("l3"):
            line = _PROCESS_TAG.sub("", line)
        found = next((g for g in "1234" if match.group(f"l{g}")), None)
        # An error of benchmark_model's own tag; other apps' errors in an unfiltered
        # logcat are not the benchmark's.
        if found and match.group(f"l{found}") in "EF" and (
                found == "3" or (match.group(f"t{found}") or "").startswith("tflite")):
            level = "ERROR"
        line = line[match.end():]
    info = _LEVEL.match(line)
    if info:
        level, line = info.group(1), line[info.end():]
    return level, line.rstrip()


def _lines(text):
    """benchmark_model's lines without their log prefixes, each with its level."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise TypeError(f"benchmark_model's output is text (str or bytes), got "
                        f"{type(text).__name__}.")
    return [line for line in map(_strip, text.splitlines()) if line is not None]


def _stats_line(line):
    """The `count=...` statistics in `line`, or None (also for the op profiler's)."""
    match = _STATS.search(line)
    if match is None or _PROFILER.search(line[:match.start()]):
        return None
    fields = _fields(line[match.start():])
    return fields if "avg" in fields or "curr" in fields else None


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
    stats = [f for f in (_stats_line(line) for _, line in lines) if f is not None]
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
    timings = re.search(r"(?<!Average )Inference timings in us: (.*)", body)
    legacy = re.search(r"Average inference timings in us: (.*)", body)
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
    negative = sorted(k for k, v in result.items()
                      if k.endswith("_ms") and v is not None and v < 0)
    if negative:
        raise AndroidBenchmarkError(
            f"benchmark_model's log prints negative times ({', '.join(negative)}): its clock "
            "or the log is broken. Benchmark again; do not use these figures.")
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
