"""A training step with each compaction regularizer over the plain step (goal <= 1.2x).

Variational dropout is a different network in training, not only a loss term:
every resizable convolution also convolves the squared input with the weights'
variances (the local reparameterization trick), so its step is reported beside
the regularizers'.

ResNet-32 (`cifar_resnet`), batch 64, 32x32, SGD with momentum: the plain
step, then the same network wrapped in `RegularizedModel` with each
algorithm's regularizer, all in one process, measured in rounds that cycle
through the variants (so that drifts of the machine hit each alike); the
median over rounds is reported, and each variant's ratio to the plain step.

    python benchmarks/compaction_step.py
    python benchmarks/compaction_step.py --depth 20 --batch 32 --rounds 5

Prints one JSON line.
"""

import argparse
import json
import time

import keras
import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depth", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="steps per variant per round")
    args = parser.parse_args()

    from tfnas.compaction.group_lasso import GroupLasso  # pylint: disable=import-outside-toplevel
    from tfnas.compaction.morphnet import MorphNetFlops  # pylint: disable=import-outside-toplevel
    from tfnas.compaction.training import RegularizedModel  # pylint: disable=import-outside-toplevel
    from tfnas.compaction.variational_dropout import (  # pylint: disable=import-outside-toplevel
        VariationalKL, variational_copy)
    from tfnas.spaces.cifar_resnet import cifar_resnet  # pylint: disable=import-outside-toplevel

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    batch = (rng.uniform(0, 255, (args.batch, 32, 32, 3)).astype("float32"),
             rng.integers(0, 10, args.batch))
    variants = {}
    for name in ("plain", "group_lasso", "morphnet", "variational_dropout"):
        network = cifar_resnet(args.depth)
        model = network
        if name == "group_lasso":
            model = RegularizedModel(network, GroupLasso(network), 1e-3)
        elif name == "morphnet":
            regularizer = MorphNetFlops(network)
            model = RegularizedModel(network, regularizer, 1.0 / float(
                regularizer.alive_flops()))
        elif name == "variational_dropout":  # every conv sampled: a second convolution
            producers = {layer.name for layer in network.layers
                         if isinstance(layer, keras.layers.Conv2D)}
            network = variational_copy(network, producers, seed=0)
            model = RegularizedModel(network, VariationalKL(network, 2000), 1.0)
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.make_train_function()
        step = model.train_function
        for _ in range(2):  # trace and warm up
            keras.ops.convert_to_numpy(step(iter([batch]))["loss"])
        variants[name] = step
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, step in variants.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                logs = step(iter([batch]))
            keras.ops.convert_to_numpy(logs["loss"])
            times[name].append((time.perf_counter() - start) / args.steps)
    median = {name: float(np.median(t)) for name, t in times.items()}
    print(json.dumps({
        "benchmark": "compaction_step", "depth": args.depth, "batch": args.batch,
        "rounds": args.rounds, "step_s": {k: round(v, 4) for k, v in median.items()},
        **{f"{k}_vs_plain": round(v / median["plain"], 3) for k, v in median.items()
           if k != "plain"}}))


if __name__ == "__main__":
    main()
