"""Latency of TFLite models: on this host with LiteRT, and the common result format."""

import os
import time

import numpy as np

from tfnas.deploy.tflite import interpreter


def summarize(latencies_ms, **fields):
    """The JSON record every benchmark in tfnas reports: min / median / p90 / mean in ms."""
    t = np.asarray(latencies_ms, dtype=np.float64)
    return {"min_ms": round(float(t.min()), 4), "median_ms": round(float(np.median(t)), 4),
            "p90_ms": round(float(np.percentile(t, 90)), 4),
            "mean_ms": round(float(t.mean()), 4), "num_runs": int(t.size), **fields}


def benchmark_host(path, num_threads=1, warmup_runs=10, num_runs=100, seed=0):
    """Times single-image inference of a `.tflite` model with the LiteRT interpreter.

    The input is random data of the model's input type; `warmup_runs` untimed
    runs come first. Returns `summarize(...)` with the thread count and file size.
    """
    if num_runs < 1 or warmup_runs < 0 or num_threads < 1:
        raise ValueError("num_runs and num_threads must be >= 1 and warmup_runs >= 0.")
    it = interpreter(path, num_threads=num_threads)
    detail = it.get_input_details()[0]
    rng = np.random.default_rng(seed)
    if np.issubdtype(detail["dtype"], np.integer):
        info = np.iinfo(detail["dtype"])
        x = rng.integers(info.min, info.max, detail["shape"], dtype=detail["dtype"])
    else:
        x = rng.uniform(0, 255, detail["shape"]).astype(detail["dtype"])
    it.set_tensor(detail["index"], x)
    for _ in range(warmup_runs):
        it.invoke()
    times = []
    for _ in range(num_runs):
        start = time.perf_counter()
        it.invoke()
        times.append(1e3 * (time.perf_counter() - start))
    return summarize(times, num_threads=num_threads, warmup_runs=warmup_runs,
                     model_bytes=os.path.getsize(path), device="host")
