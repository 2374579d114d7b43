"""Latency lookup tables: time every candidate op of a search space, predict whole networks.

A table is a versioned JSON document keyed by op signature (as ProxylessNAS's,
e.g. `grunas_unit-input:18x18x48-output:18x18x96-groups:2`) with `count`,
`mean` and `var` in milliseconds. Each op is converted alone to TFLite and
timed with the host benchmark (or on a phone with `AndroidBenchmark`). Every
single-op model pays the interpreter's fixed cost of one invoke; the table
measures that cost once (`overhead`) and the prediction counts it once:

    predicted(arch) = overhead + scale * sum over ops (mean(op) - overhead)

`scale` is 1 unless `calibrate_table` fitted it on a few whole networks: on
this host the sum of isolated int8 ops misses ~20 % of whole int8 networks
(float32 matches within ~1 %), a gap one factor closes.

`tfnas.costs.LatencyCost` turns a table into a differentiable expected
latency of a supernet for any penalty, and `predict` uses it for one network.
"""

import contextlib
import json
import os
import tempfile
import time

import keras
import numpy as np

from tfnas.deploy.benchmark import benchmark_host
from tfnas.deploy.saved_model import export_saved_model
from tfnas.deploy.tflite import convert
from tfnas.errors import TfnasError

FORMAT = "tfnas.latency_table"
VERSION = 1
OVERHEAD = "overhead-identity"


class LatencyTableError(TfnasError, ValueError):
    """A latency table is malformed or lacks an op a search space needs."""


def _overhead_model(input_shape):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.ReLU()(inputs))


def build_table(space, mode="float32", num_threads=1, num_runs=200, warmup_runs=20,
                repeats=3, benchmark=None, workdir=None, log=print):
    """Times every op of `space` and returns the table (a dict; see `save_table`).

    Args:
        space: a `SearchSpace` with `latency_ops()`.
        mode: the TFLite mode the deployed model will use (`float32`, `int8`, ...).
        num_threads, num_runs, warmup_runs: of each host benchmark.
        repeats: timings of each op, interleaved across ops, pooled into count/mean/var.
        benchmark: `path -> result with median_ms` to time on another device (for example
            `lambda p: AndroidBenchmark(binary).run(p, num_threads=4)`); default the host.
    """
    benchmark = benchmark or (lambda path: benchmark_host(
        path, num_threads=num_threads, warmup_runs=warmup_runs, num_runs=num_runs))
    fixed, blocks = space.latency_ops()
    builders = dict(fixed)
    for candidates in blocks.values():
        builders.update(dict(candidates))
    start = time.time()
    paths = {}
    times = {}
    with _scratch(workdir, "tfnas-latency-") as scratch:
        for i, (signature, build) in enumerate(builders.items()):
            keras.utils.set_random_seed(i)
            model = build()
            if not paths:  # the interpreter's fixed cost of one invoke, on a trivial op
                paths[OVERHEAD] = convert_for_timing(_overhead_model(model.input_shape[1:]),
                                                     mode, scratch, "overhead")
            paths[signature] = convert_for_timing(model, mode, scratch, f"op{i}")
        times = {s: [] for s in paths}
        # Interleave the ops round by round, so drift of the machine spreads over all of them.
        for r in range(repeats):
            for signature, path in paths.items():
                times[signature].append(benchmark(path)["median_ms"])
            if log:
                log(f"latency table: round {r + 1}/{repeats} of {len(paths)} ops, "
                    f"{time.time() - start:.0f} s")
    entries = {s: {"count": len(t), "mean": float(np.mean(t)), "var": float(np.var(t))}
               for s, t in times.items()}
    return {"format": FORMAT, "version": VERSION, "space": space.name,
            "space_config": space.config, "mode": mode, "num_threads": num_threads,
            "device": "host", "overhead": entries[OVERHEAD]["mean"], "entries": entries}


@contextlib.contextmanager
def _scratch(workdir, prefix):
    """`workdir` when given (kept), else a temporary directory removed afterwards."""
    if workdir is not None:
        os.makedirs(workdir, exist_ok=True)
        yield workdir
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield tmp


def convert_for_timing(model, mode, workdir, name):
    """`.tflite` of `model` in `mode` for timing (int8 calibrated on random images)."""
    saved = export_saved_model(model, os.path.join(workdir, name), classifier=False)
    rep = None
    if mode == "int8":
        rep = [np.random.default_rng(0).uniform(0, 255, (32, *model.input_shape[1:]))
               .astype("float32")]
    return convert(saved, os.path.join(workdir, f"{name}.tflite"), mode,
                   representative_data=rep, calibration_steps=32)


def save_table(table, path, overwrite=False):
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(table, f, indent=2)
    return path


def load_table(path_or_dict):
    """Reads and validates a latency table."""
    if isinstance(path_or_dict, dict):
        table = path_or_dict
    else:
        try:
            with open(path_or_dict, encoding="utf-8") as f:
                table = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise LatencyTableError(f"Cannot read latency table {path_or_dict}: {err}") \
                from None
    if table.get("format") != FORMAT or table.get("version") != VERSION:
        raise LatencyTableError(f"Not a tfnas latency table (version {VERSION}): format "
                                f"{table.get('format')!r}, version {table.get('version')!r}.")
    for key in ("entries", "overhead"):
        if key not in table:
            raise LatencyTableError(f"The latency table has no {key!r}.")
    for signature, entry in table["entries"].items():
        if not {"count", "mean", "var"} <= set(entry):
            raise LatencyTableError(f"Entry {signature!r} needs count, mean and var.")
    return table


def calibrate_table(table, space, num_networks=3, seed=1000, benchmark=None, workdir=None):
    """Fits `table["scale"]` so predictions match `num_networks` whole networks of `space`.

    The networks are sampled with `seed` and timed whole; validate on other
    networks. Returns the table, with `calibration` recording what was fitted.
    """
    table = load_table(table)
    benchmark = benchmark or (lambda path: benchmark_host(
        path, num_threads=table.get("num_threads", 1), warmup_runs=20, num_runs=200))
    rng = np.random.default_rng(seed)
    ratios = []
    unscaled = {**table, "scale": 1.0}
    with _scratch(workdir, "tfnas-latency-calibration-") as scratch:
        for i in range(num_networks):
            choices = {b: space.candidates(b)[rng.integers(len(space.candidates(b)))]
                       for b in space.blocks()}
            model = space.build_model(choices)
            measured = benchmark(convert_for_timing(model, table["mode"], scratch,
                                                    f"net{i}"))["median_ms"]
            ops_ms = predict(unscaled, space, choices) - table["overhead"]
            ratios.append((measured - table["overhead"]) / ops_ms)
    table["scale"] = float(np.median(ratios))
    table["calibration"] = {"num_networks": num_networks, "seed": seed,
                            "ratios": [round(float(r), 4) for r in ratios]}
    return table


def fixed_ms(table, fixed):
    """The interpreter's overhead plus the ops every network has (`fixed` of `latency_ops`)."""
    return table["overhead"] + sum(op_ms(table, s) for s, _ in fixed)


def op_ms(table, signature):
    """The scaled time of one op above the interpreter's overhead."""
    try:
        return table.get("scale", 1.0) * (table["entries"][signature]["mean"]
                                          - table["overhead"])
    except KeyError:
        raise LatencyTableError(
            f"The latency table has no entry for op {signature!r}, which the search space "
            "needs. Build the table for this space and input size (tfnas.deploy.latency."
            "build_table, or `tfnas latency-table`).") from None


def predict(table, space, choices):
    """Predicted latency (ms) of the architecture `{block: choice}` (`LatencyCost.of_choices`)."""
    from tfnas.costs import LatencyCost  # pylint: disable=import-outside-toplevel

    return float(LatencyCost.from_table(table, space).of_choices(choices))
