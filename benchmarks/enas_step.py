"""ENAS weight sharing: the child step of the shared supernet against the derived network's step.

The supernet is built with the `"chosen"` mixing rule (the path is a variable; one candidate
runs in a graph `Case`, the others' weights and optimizer slots are held); every round sets a
new random path, without retracing. It is timed in both forms of the `Case`: `reproducible`
(one function call, `"reproducible": true`) and `fast` (lowered to Switch/Merge, the
default). The derived network is the plain Keras model of the same path, trained by
`train_on_batch`. The three steps run side by side, interleaved round by round; the
ratios of medians are printed as one JSON line.

    python benchmarks/enas_step.py [--batch 64] [--rounds 20] [--config configs/grunas_enas.json]
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfnas.config import load_config  # noqa: E402
from tfnas.layers.chosen_path import set_path  # noqa: E402
from tfnas.search_model import WEIGHTS, SearchModel  # noqa: E402
from tfnas.spaces import get_space  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/grunas_enas.json")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    config = load_config(args.config)
    space = get_space(config["space"]["name"], config["space"]["config"])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.batch, *space.config["input_shape"])).astype("float32")
    y = rng.integers(0, space.config["num_classes"], args.batch)
    batch = (tf.constant(x), tf.constant(y), tf.constant(WEIGHTS))

    shared, child_steps = {}, {}
    for form in ("reproducible", "fast"):
        keras.utils.set_random_seed(0)
        shared[form] = SearchModel(space.build_supernet(
            mixing={"type": "chosen", "reproducible": form == "reproducible"}))
        shared[form].compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
        child_steps[form] = tf.function(shared[form].train_step)

    def sample():
        return {b: space.candidates(b)[rng.integers(len(space.candidates(b)))]
                for b in space.blocks()}

    derived = {}
    times = {"reproducible": [], "fast": [], "derived": []}
    for round_ in range(args.rounds + 1):
        choices = sample()
        key = json.dumps(choices, sort_keys=True)
        if key not in derived:
            model = space.build_model(choices)
            model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            model.train_on_batch(x, y)  # trace
            derived[key] = model
        elapsed = {}
        for form, step in child_steps.items():
            set_path(shared[form].supernet, space.supernet_path(choices))
            start = time.perf_counter()
            step(batch)
            elapsed[form] = time.perf_counter() - start
        start = time.perf_counter()
        derived[key].train_on_batch(x, y)
        elapsed["derived"] = time.perf_counter() - start
        if round_:  # round 0 traces the shared steps
            for form, seconds in elapsed.items():
                times[form].append(seconds)
    ms = {k: float(np.median(v)) for k, v in times.items()}
    print(json.dumps({
        "benchmark": "enas_child_step", "space": space.name, "batch": args.batch,
        "rounds": args.rounds, **{f"{k}_ms": round(1000 * v, 2) for k, v in ms.items()},
        "reproducible_over_derived": round(ms["reproducible"] / ms["derived"], 3),
        "fast_over_derived": round(ms["fast"] / ms["derived"], 3),
        "shared_step_traces": {k: int(f.experimental_get_tracing_count())
                               for k, f in child_steps.items()},
        "paths": args.rounds + 1}))


if __name__ == "__main__":
    main()
