"""ENAS weight sharing: the child step of the shared supernet against the derived network's step.

The supernet is built with the `"chosen"` mixing rule (the path is a variable; one candidate
runs through `keras.ops.switch`, the others' weights and optimizer slots are held); every
round sets a new random path, without retracing. The derived network is the plain Keras model
of the same path, trained by `train_on_batch`. Both steps run side by side, interleaved round by
round; the ratio of medians is printed as one JSON line.

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

    keras.utils.set_random_seed(0)
    shared = SearchModel(space.build_supernet(mixing="chosen"))
    shared.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), arch_optimizer="adam")
    child_step = tf.function(shared.train_step)

    def sample():
        return {b: space.candidates(b)[rng.integers(len(space.candidates(b)))]
                for b in space.blocks()}

    derived = {}
    times = {"shared": [], "derived": []}
    for round_ in range(args.rounds + 1):
        choices = sample()
        key = json.dumps(choices, sort_keys=True)
        if key not in derived:
            model = space.build_model(choices)
            model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            model.train_on_batch(x, y)  # trace
            derived[key] = model
        set_path(shared.supernet, choices)
        start = time.perf_counter()
        child_step(batch)
        shared_time = time.perf_counter() - start
        start = time.perf_counter()
        derived[key].train_on_batch(x, y)
        derived_time = time.perf_counter() - start
        if round_:  # round 0 traces the shared step
            times["shared"].append(shared_time)
            times["derived"].append(derived_time)
    medians = {k: float(np.median(v)) for k, v in times.items()}
    print(json.dumps({
        "benchmark": "enas_child_step", "space": space.name, "batch": args.batch,
        "rounds": args.rounds, "shared_ms": round(1000 * medians["shared"], 2),
        "derived_ms": round(1000 * medians["derived"], 2),
        "shared_over_derived": round(medians["shared"] / medians["derived"], 3),
        "shared_step_traces": int(child_step.experimental_get_tracing_count()),
        "paths": args.rounds + 1}))


if __name__ == "__main__":
    main()
