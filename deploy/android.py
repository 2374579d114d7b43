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

DEVICE_DIR = "/data/local/tmp"


class AndroidBenchmarkError(RuntimeError):
    """adb, the device or benchmark_model is missing or failed."""


_NUMBER = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"


def _fields(line):
    return {k: float(v) for k, v in re.findall(r"(\w+)=" + _NUMBER, line)}


def parse_benchmark_output(text):
    """Parses `benchmark_model`'s log, current and legacy formats, into milliseconds.

    Current builds print two `count=... min=... avg=... median=...` lines in
    microseconds (warm-up, then the timed runs) and `Inference timings in us:
    Init: .., First inference: .., Warmup (avg): .., Inference (avg): ..`;
    older builds print only `Average inference timings in us: Warmup: ..,
    Init: .., Inference: ..`. Percentiles the tool does not print are None.
    """
    stats = [_fields(line) for line in text.splitlines()
             if re.search(r"\bcount=\d+", line) and "avg=" in line]
    result = {"min_ms": None, "median_ms": None, "p90_ms": None, "mean_ms": None,
              "num_runs": None, "device": "android"}
    if stats:
        runs = stats[-1]
        us = 1e-3
        result.update({
            "min_ms": runs.get("min", 0) * us, "median_ms": runs.get("median", 0) * us,
            "mean_ms": runs.get("avg", 0) * us, "num_runs": int(runs.get("count", 0)),
            "max_ms": runs.get("max", 0) * us, "std_ms": runs.get("std", 0) * us,
            "p5_ms": runs["p5"] * us if "p5" in runs else None,
            "p95_ms": runs["p95"] * us if "p95" in runs else None,
            "first_ms": runs["first"] * us if "first" in runs else None,
        })
        if len(stats) > 1:
            result["warmup_mean_ms"] = stats[0].get("avg", 0) * us
    timings = re.search(r"Inference timings in us: (.*)", text)
    legacy = re.search(r"Average inference timings in us: (.*)", text)
    if timings:
        parts = dict(re.findall(r"([A-Za-z ()]+?):\s*" + _NUMBER, timings.group(1)))
        parts = {k.strip(): float(v) for k, v in parts.items()}
        result["init_ms"] = parts.get("Init", 0) * 1e-3
        result.setdefault("first_ms", None)
        if result["first_ms"] is None and "First inference" in parts:
            result["first_ms"] = parts["First inference"] * 1e-3
        if result["mean_ms"] is None and "Inference (avg)" in parts:
            result["mean_ms"] = parts["Inference (avg)"] * 1e-3
    elif legacy:
        parts = {k.strip(): float(v) for k, v in
                 re.findall(r"([A-Za-z ()]+?):\s*" + _NUMBER, legacy.group(1))}
        result["init_ms"] = parts.get("Init", 0) * 1e-3
        result["warmup_mean_ms"] = parts.get("Warmup", 0) * 1e-3
        if result["mean_ms"] is None:
            result["mean_ms"] = parts.get("Inference", 0) * 1e-3
    if result["mean_ms"] is None:
        raise AndroidBenchmarkError("No timings found in benchmark_model's output:\n"
                                    + text[-2000:])
    size = re.search(r"The input model file size \(MB\):\s*" + _NUMBER, text)
    if size:
        result["model_mb"] = float(size.group(1))
    session = re.search(r"Initialized session in\s*" + _NUMBER + "ms", text)
    if session:
        result["init_ms"] = float(session.group(1))
    memory = re.search(r"Memory footprint delta.*?init=" + _NUMBER + r"\s+overall=" + _NUMBER,
                       text)
    if memory:
        result["memory_init_mb"] = float(memory.group(1))
        result["memory_overall_mb"] = float(memory.group(2))
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
            result["op_profile"] = profile_out
        return result
