"""One first-order DARTS search step on the DARTS space, against NNI 3.0 on the same class of
machine.

A step is an architecture step on a validation batch plus a weight step on a
training batch (`SearchModel`, `alternation: "step"`), the supernet of the
paper's search (C = 16, 8 cells, 4 nodes), batch 64, 32x32 images. Each
variant runs in its own process: it builds the search model, runs one step
to trace it, then times `--steps` more (median) and reports the process's
peak resident memory (`ru_maxrss`, what NNI's figure is; also as it stood when
the first steps, which trace, ended) and the TensorFlow CPU allocator's peak
in the timed steps. NNI's figures (32.3 s, 9.4 GB peak RSS,
measured by peers on a 2-core machine like CI, PyTorch 2.13 CPU) cannot be
rerun here (no PyTorch), so the ratios to them compare runs on two machines
of one class, not side by side.

Variants: `darts` (plain DARTS: softmax over the 8 ops on every edge, the
step `fit` runs: one traced function per phase), `darts_one_graph` (the same
step as one traced function branching on the phase in the graph, what tfnas
ran before; its ratios to `darts` are why it no longer does), `darts_gumbel`
(the same network with SNAS/GRUNAS Gumbel-softmax mixing), and
DCA-NAS's savers on top of `darts` (space config, `DartsSpace.build_supernet`):
`dca_shared` (ops computed once per source node), `dca_bottleneck` (ops at
C/`--bottleneck` channels), `dca_derived` (cells other than the first of each
kind run their argmax op only), `dca` (all three). `darts_remat` and
`dca_remat` are `darts` and `dca` with the mixed ops' activations recomputed in
the backward pass (`SearchModel(rematerialize=True)`, search config
`search.rematerialize`); `dca_shared_bottleneck_remat` is `dca_remat` without
derived cells (whose graph conditionals make a larger traced step). Ratios are
to `darts`, measured side by side in one run.

    python benchmarks/darts_step.py
    python benchmarks/darts_step.py --variants darts --batch 32 --steps 2

Prints one JSON line.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

VARIANTS = ("darts", "darts_remat", "darts_one_graph", "darts_gumbel", "dca_shared",
            "dca_bottleneck", "dca_derived", "dca", "dca_remat", "dca_shared_bottleneck_remat")
SAVERS = {"darts": {}, "darts_remat": {}, "darts_one_graph": {}, "darts_gumbel": {},
          "dca_shared": {"share_source_ops": True},
          "dca_bottleneck": {"bottleneck": None}, "dca_derived": {"derived_cells": True},
          "dca": {"share_source_ops": True, "bottleneck": None, "derived_cells": True}}
SAVERS["dca_remat"] = SAVERS["dca"]
SAVERS["dca_shared_bottleneck_remat"] = {"share_source_ops": True, "bottleneck": None}
NNI_STEP_S, NNI_PEAK_RSS_GB = 32.3, 9.4


def measure(args):
    """Runs inside the child process; prints one JSON object."""
    import keras  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfnas import determinism  # pylint: disable=import-outside-toplevel
    from tfnas.search_model import SearchModel  # pylint: disable=import-outside-toplevel
    from tfnas.spaces import get_space  # pylint: disable=import-outside-toplevel

    determinism.configure(args.deterministic)  # as a tfnas run sets it
    keras.utils.set_random_seed(0)
    savers = {k: args.bottleneck if v is None else v for k, v in SAVERS[args.variant].items()}
    space = get_space("darts", {"filters": args.filters, "cells": args.cells,
                                "input_shape": [args.size, args.size, 3], **savers})
    start = time.perf_counter()
    mixing = ({"type": "gumbel", "temperature": 1.0} if args.variant == "darts_gumbel"
              else "softmax")
    model = SearchModel(space.build_supernet(mixing),
                        rematerialize=args.variant.endswith("_remat"))
    build_s = time.perf_counter() - start
    # DARTS's search optimizers (train_search.py).
    model.compile(optimizer=keras.optimizers.SGD(0.025, momentum=0.9, weight_decay=3e-4),
                  arch_optimizer=keras.optimizers.Adam(3e-4, beta_1=0.5, beta_2=0.999,
                                                       weight_decay=1e-3))
    rng = np.random.default_rng(0)
    batches = [(tf.constant(rng.uniform(0, 255, (args.batch, args.size, args.size, 3)),
                            tf.float32),
                tf.constant(rng.integers(0, 10, args.batch), tf.int32), tf.constant(p))
               for p in (1, 0)]  # alpha on a validation batch, then the weights
    if args.variant == "darts_one_graph":
        step = tf.function(model.train_step)
    else:
        model.make_train_function()
        step = lambda batch: model.train_function(iter([batch]))  # noqa: E731
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    trace_s = time.perf_counter() - start
    trace_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    tf.config.experimental.reset_memory_stats("CPU:0")
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        for batch in batches:
            out = step(batch)
        keras.ops.convert_to_numpy(next(iter(out.values())))
        times.append(time.perf_counter() - start)
    print(json.dumps({
        "variant": args.variant, "deterministic": bool(args.deterministic),
        "step_s": float(np.median(times)),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
        "peak_rss_by_trace_end_gb": trace_rss_gb,
        "tf_peak_gb": tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2 ** 30,
        "weights": sum(int(np.prod(v.shape)) for v in model.weight_variables),
        "build_s": round(build_s, 1), "first_steps_s": round(trace_s, 1)}))


def run_child(args, variant):
    cmd = [sys.executable, __file__, "--child", variant, "--filters", str(args.filters),
           "--cells", str(args.cells), "--batch", str(args.batch), "--size", str(args.size),
           "--steps", str(args.steps), "--bottleneck", str(args.bottleneck),
           "--deterministic", str(int(args.deterministic))]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--deterministic", type=int, choices=[0, 1], default=1,
                        help="1: as tfnas runs by default (tfnas.determinism); 0: "
                             "TensorFlow's default graph optimizations")
    parser.add_argument("--bottleneck", type=int, default=4,
                        help="the channel bottleneck's ratio (DCA-NAS leaves it unstated; "
                             "PC-DARTS, which it builds on, samples 1/4 of the channels)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.variant = args.child
        measure(args)
        return
    summary = {"benchmark": "darts_step", "filters": args.filters, "cells": args.cells,
               "batch": args.batch, "size": args.size, "steps": args.steps,
               "bottleneck": args.bottleneck,
               "nni_step_s": NNI_STEP_S, "nni_peak_rss_gb": NNI_PEAK_RSS_GB}
    for variant in args.variants.split(","):
        r = run_child(args, variant)
        summary[variant] = r
        if (args.filters, args.cells, args.batch, args.size) == (16, 8, 64, 32):
            summary[f"{variant}_time_vs_nni"] = round(r["step_s"] / NNI_STEP_S, 3)
            summary[f"{variant}_peak_rss_vs_nni"] = round(r["peak_rss_gb"] / NNI_PEAK_RSS_GB, 3)
        if variant != "darts" and "darts" in summary:
            base = summary["darts"]
            for key in ("step_s", "peak_rss_gb", "tf_peak_gb", "first_steps_s"):
                summary[f"{variant}_{key}_vs_darts"] = round(r[key] / base[key], 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
