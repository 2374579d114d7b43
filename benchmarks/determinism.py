"""Repeatability and cost of `"deterministic": true` (`tfnas.determinism`).

Each variant (`deterministic`: Grappler's memory optimizer off; `default`:
TensorFlow's default) runs in its own processes, the variants alternating round by
round, so that "the same in a new process" is measured too:

- the race graph, the smallest found whose traced gradient is not repeatable: four
  residual branches `relu(h + bn(conv(bn(conv(h)))))` summed, `h = relu(input)`,
  64x18x18x96, plain TensorFlow ops. Distinct gradients among `--calls` calls of one
  traced function on the same input, and a hash of the first (compared across
  processes).
- a search step (weight step on a training batch, architecture step on a
  validation batch) of the quickstart's GRUNAS supernet, batch 64: the median time
  over `--steps` steps, the CPU allocator's peak over them minus what was resident
  before (activation memory), whether replaying the first two steps from one state
  `--repeats` times gives one set of weights, and a hash of those weights.

    python benchmarks/determinism.py
    python benchmarks/determinism.py --rounds 3 --calls 80

Prints one JSON line: per variant the distinct results within each process and
across all of them, the median step time and activation memory, and their ratios
(deterministic over default).
"""

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def race(calls):
    """Distinct gradients of the race graph among `calls` calls."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(0)
    h0 = tf.constant(np.abs(rng.normal(size=(64, 18, 18, 96))).astype("float32"))
    kernels = [(tf.constant(rng.normal(size=(1, 1, 96, 48)).astype("float32") * 0.1),
                tf.constant(rng.normal(size=(1, 1, 48, 96)).astype("float32") * 0.1))
               for _ in range(4)]

    def norm(y):
        mean, variance = tf.nn.moments(y, [0, 1, 2])
        return (y - mean) * tf.math.rsqrt(variance + 1e-5)

    @tf.function
    def gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            h = tf.nn.relu(x)
            out = tf.add_n([tf.nn.relu(h + norm(tf.nn.conv2d(norm(tf.nn.conv2d(h, a, 1, "VALID")),
                                                             b, 1, "VALID")))
                            for a, b in kernels])
            loss = tf.reduce_sum(out * tf.random.stateless_normal(tf.shape(out), seed=[1, 2]))
        return tape.gradient(loss, x)

    results = [gradient(h0).numpy().tobytes() for _ in range(calls)]
    return len(set(results)), hashlib.md5(results[0]).hexdigest()


def search_steps(steps, repeats, deterministic):
    """(median seconds per search step, activation bytes, distinct weight states after
    `repeats` replays of the first two steps from one state, a hash of the first)."""
    import time  # pylint: disable=import-outside-toplevel

    import keras  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfnas import data as data_lib  # pylint: disable=import-outside-toplevel
    from tfnas import pipeline  # pylint: disable=import-outside-toplevel
    from tfnas.config import load_config  # pylint: disable=import-outside-toplevel
    from tfnas.methods import get_method  # pylint: disable=import-outside-toplevel
    from tfnas.optimizers import make_optimizer  # pylint: disable=import-outside-toplevel

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    config = load_config(os.path.join(root, "configs", "quickstart.json"),
                         [f"deterministic={str(deterministic).lower()}"])
    keras.utils.set_random_seed(0)
    prepared = pipeline.prepare(config)
    method = get_method(config, prepared)
    model = method.build_search_model()
    section = method.section
    model.compile(optimizer=make_optimizer(section["optimizer"], 1000),
                  arch_optimizer=make_optimizer(section["arch_optimizer"], 1000))
    batches = data_lib.search_schedule(prepared.batches("train", True, 0),
                                       prepared.batches("val", True, 0))
    items = list(batches.take(2 * steps + 4))
    step = model.make_train_function()
    model.arch_updates_enabled.assign(True)
    state = model.variables + model.optimizer.variables + model.arch_optimizer.variables
    start = [v.numpy() for v in state]
    outcomes = []
    for _ in range(repeats):
        for v, value in zip(state, start):
            v.assign(value)
        for item in items[:2]:
            step(iter([item]))
        outcomes.append(b"".join(v.numpy().tobytes() for v in model.supernet.variables))
    tf.config.experimental.reset_memory_stats("CPU:0")
    resident = tf.config.experimental.get_memory_info("CPU:0")["current"]
    times = []
    for i in range(2, len(items) - 1, 2):
        begin = time.perf_counter()
        step(iter([items[i]]))
        step(iter([items[i + 1]]))
        times.append(time.perf_counter() - begin)
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    return (statistics.median(times), peak - resident, len(set(outcomes)),
            hashlib.md5(outcomes[0]).hexdigest())


def child(args):
    from tfnas import determinism  # pylint: disable=import-outside-toplevel

    deterministic = args.child == "deterministic"
    determinism.configure(deterministic)
    seconds, activations, states, state_hash = search_steps(args.steps, args.repeats,
                                                            deterministic)
    gradients, gradient_hash = race(args.calls)
    print(json.dumps({"distinct_gradients": gradients, "gradient_hash": gradient_hash,
                      "step_seconds": seconds, "activation_bytes": activations,
                      "distinct_states": states, "state_hash": state_hash}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calls", type=int, default=40, help="calls of the race graph")
    parser.add_argument("--steps", type=int, default=16, help="timed search steps")
    parser.add_argument("--repeats", type=int, default=6,
                        help="replays of the first two search steps")
    parser.add_argument("--child", choices=["deterministic", "default"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    results = {"deterministic": [], "default": []}
    for _ in range(args.rounds):
        for variant, rows in results.items():
            out = subprocess.run(
                [sys.executable, __file__, "--child", variant, "--calls", str(args.calls),
                 "--steps", str(args.steps), "--repeats", str(args.repeats)],
                check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    summary = {
        variant: {
            "distinct_gradients_per_process": [r["distinct_gradients"] for r in rows],
            "distinct_gradients_across_processes": len({r["gradient_hash"] for r in rows}),
            "distinct_states_per_process": [r["distinct_states"] for r in rows],
            "distinct_states_across_processes": len({r["state_hash"] for r in rows}),
            "step_seconds": round(statistics.median(r["step_seconds"] for r in rows), 4),
            "activation_mb": round(statistics.median(r["activation_bytes"] for r in rows)
                                   / 2 ** 20, 1)}
        for variant, rows in results.items()}
    ratio = lambda key: round(summary["deterministic"][key] / summary["default"][key], 3)  # noqa: E731
    print(json.dumps({"benchmark": "determinism", "calls": args.calls,
                      "repeats": args.repeats, "rounds": args.rounds, **summary,
                      "step_ratio": ratio("step_seconds"),
                      "activation_ratio": ratio("activation_mb")}))
    return None


if __name__ == "__main__":
    main()
