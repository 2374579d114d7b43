"""Memory and speed of a ProxylessNAS binary-gated search step against the derived network.

Each variant runs in its own process (so allocator statistics do not mix):
it builds the model and its optimizer state, runs one step to trace it, then
resets the CPU allocator's peak and runs `--steps` more. Activation memory is
the peak during those steps minus what was resident before them (weights,
optimizer slots, the data batch). Times are per-step medians, printed as
ratios to the derived single-path network, whose architecture is a uniform
random sample of the space (the binary-gated step samples such paths). Peak
ratios add the resident memory back (the supernet holds every candidate's
weights), for comparison with tools that report the whole peak.

Variants: `derived` (plain Keras model of one architecture), `binary_weight`
(weight step: one sampled path), `binary_arch` (architecture step: sampled
path + forward-only outputs of the candidates for the gate gradients),
`binary_search` (one search step: a weight step and an architecture step,
timed together), all three with `"reproducible": true` (the candidate runs as a function
call), `binary_weight_fast` (the weight step with the candidate switch lowered to
Switch/Merge, the default),
`softmax_weight` (DARTS-style supernet, every candidate runs).

    python benchmarks/proxyless_memory.py                # scope m, CIFAR stem, width 0.25
    python benchmarks/proxyless_memory.py --scope s --width 1.0

Prints one JSON line.
"""

import argparse
import json
import os
import subprocess
import sys
import time

VARIANTS = ("derived", "binary_weight", "binary_arch", "binary_search", "binary_weight_fast",
            "softmax_weight")


def measure(args):
    """Runs inside the child process; prints one JSON object."""
    import keras  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfnas.search_model import SearchModel  # pylint: disable=import-outside-toplevel
    from tfnas.spaces import get_space  # pylint: disable=import-outside-toplevel

    keras.utils.set_random_seed(0)
    space = get_space("resnet50", {"scope": args.scope, "stem": args.stem,
                                   "width_multiplier": args.width,
                                   "input_shape": [args.size, args.size, 3]})
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (args.batch, args.size, args.size,
                                                               3)).astype("float32"))
    y = tf.constant(np.arange(args.batch) % 10, tf.int32)
    sgd = keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=4e-5)
    if args.variant == "derived":
        rng = np.random.default_rng(1)
        choices = {b: space.candidates(b)[rng.integers(len(space.candidates(b)))]
                   for b in space.blocks()}
        model = space.build_model(choices)
        model.compile(optimizer=sgd,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.optimizer.build(model.trainable_variables)
        step = tf.function(model.train_step)
        batches = [(x, y)]
    else:
        mixing = {"softmax_weight": "softmax",
                  "binary_weight_fast": {"type": "binary", "reproducible": False}}.get(
                      args.variant, {"type": "binary", "reproducible": True})
        model = SearchModel(space.build_supernet(mixing))
        model.compile(optimizer=sgd,
                      arch_optimizer=keras.optimizers.Adam(1e-3, beta_1=0.0, beta_2=0.999))
        step = tf.function(model.train_step)
        phases = {"binary_weight": [0], "binary_weight_fast": [0], "softmax_weight": [0],
                  "binary_arch": [1], "binary_search": [0, 1]}[args.variant]
        batches = [(x, y, tf.constant(p, tf.int32)) for p in phases]
    for batch in batches:  # trace every branch before measuring
        step(batch)
    tf.config.experimental.reset_memory_stats("CPU:0")
    resident = tf.config.experimental.get_memory_info("CPU:0")["current"]
    times = []
    for i in range(args.steps):
        start = time.perf_counter()
        for batch in batches:
            out = step(batch)
        keras.ops.convert_to_numpy(next(iter(out.values())))
        times.append(time.perf_counter() - start)
        del i
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    print(json.dumps({"variant": args.variant, "resident_mb": resident / 2 ** 20,
                      "activation_mb": (peak - resident) / 2 ** 20,
                      "step_s": float(np.median(times))}))


def run_child(args, variant):
    cmd = [sys.executable, __file__, "--child", variant, "--scope", args.scope, "--stem",
           args.stem, "--width", str(args.width), "--batch", str(args.batch), "--size",
           str(args.size), "--steps", str(args.steps)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scope", default="m")
    parser.add_argument("--stem", default="cifar")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2,
                        help="interleaved rounds over the variants; medians are reported")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.variant = args.child
        measure(args)
        return
    variants = args.variants.split(",")
    results = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            results[variant].append(run_child(args, variant))

    def median(variant, key):
        values = sorted(r[key] for r in results[variant])
        return values[len(values) // 2]

    for rows in results.values():
        for r in rows:
            r["peak_mb"] = r["resident_mb"] + r["activation_mb"]
    base = {k: median("derived", k) for k in ("activation_mb", "step_s", "peak_mb")}
    summary = {"benchmark": "proxyless_memory", "scope": args.scope, "stem": args.stem,
               "width_multiplier": args.width, "batch": args.batch, "size": args.size,
               "rounds": args.rounds, "derived_activation_mb": round(base["activation_mb"], 1),
               "derived_step_s": round(base["step_s"], 4)}
    for variant in variants:
        if variant == "derived":
            continue
        summary[f"{variant}_activation_ratio"] = round(
            median(variant, "activation_mb") / base["activation_mb"], 3)
        summary[f"{variant}_peak_ratio"] = round(median(variant, "peak_mb") / base["peak_mb"], 3)
        summary[f"{variant}_time_ratio"] = round(median(variant, "step_s") / base["step_s"], 3)
    summary["raw"] = results
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
