"""Size and trace time of a supernet's traced search steps: tfnas's against Keras's own
batch norms and optimizers.

A short CPU search spends most of its time tracing its steps, and the time goes with the
number of graph ops. For each space, the weight step (SGD with momentum, weight decay and
a cosine schedule, as the recipes train) and the architecture step (Adam) are traced with
`tf.function(...).get_concrete_function`; the variant `keras` builds the supernet with
`keras.layers.BatchNormalization` and uses `keras.optimizers.SGD`/`Adam`, the variant
`tfnas` what tfnas runs (`FusedBatchNormalization` in supernets, `tfnas.optimizers`).
Rounds alternate the variants; one JSON line with the medians and their ratios.

    python benchmarks/trace_ops.py                  # about 2 minutes on 2 cores
    python benchmarks/trace_ops.py --spaces grunas --rounds 3
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfnas import SearchModel, determinism, optimizers  # noqa: E402
from tfnas.layers import grunas_unit  # noqa: E402
from tfnas.spaces import get_space, grunas, resnet  # noqa: E402

SPACES = {
    # The quickstart's supernet.
    "grunas": ("grunas", {"widths": [[12, 24], [24, 24], [24, 48], [48, 48], [48, 96],
                                     [96, 96]], "candidates": [1, 2, 3, 4]}, "gumbel"),
    # ProxylessNAS's ResNet-50 space, CIFAR stem, the smallest scope, binary gates.
    "resnet50": ("resnet50", {"scope": "s", "stem": "cifar", "width_multiplier": 0.25,
                              "input_shape": [32, 32, 3]}, "binary"),
}
SGD = {"learning_rate": 0.05, "momentum": 0.9, "weight_decay": 1e-4}
ADAM = {"learning_rate": 0.05}


# The layer sets the supernets are built with, per variant (the modules look them up by
# name when a supernet is built).
LAYER_SETS = {
    "tfnas": {grunas_unit: grunas_unit.supernet_layer_set, grunas: grunas.supernet_layer_set,
              resnet: resnet.supernet_layer_set},
    "keras": {grunas_unit: grunas_unit.keras_layer_set, grunas: grunas_unit.keras_layer_set,
              resnet: resnet.keras_layer_set}}


def _variant(name):
    """Puts variant `name`'s supernet layer sets in place; its SGD and Adam classes."""
    for module, layer_set in LAYER_SETS[name].items():
        module.supernet_layer_set = layer_set
    module = optimizers if name == "tfnas" else keras.optimizers
    return module.SGD, module.Adam


def _trace(space_name, config, mixing, variant):
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)
    sgd, adam = _variant(variant)
    space = get_space(space_name, config)
    search = SearchModel(space.build_supernet(mixing))
    schedule = keras.optimizers.schedules.CosineDecay(SGD["learning_rate"], 1000)
    search.compile(optimizer=sgd(**{**SGD, "learning_rate": schedule}), arch_optimizer=adam(**ADAM))
    search.optimizer.build(search.weight_variables)
    search.arch_optimizer.build(search.architecture_variables)
    x = tf.zeros((32, *config.get("input_shape", [32, 32, 3])))
    y = tf.zeros((32,), tf.int32)
    result = {}
    for phase, step in ((0, "weight"), (1, "arch")):
        start = time.perf_counter()
        graph = tf.function(lambda x, y, phase=phase: search.train_step((x, y, phase))) \
            .get_concrete_function(x, y).graph
        result[f"{step}_trace_s"] = time.perf_counter() - start
        result[f"{step}_ops"] = len(graph.get_operations())
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spaces", default=",".join(SPACES))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    determinism.configure(True)
    out = {"benchmark": "trace_ops", "rounds": args.rounds}
    for space in args.spaces.split(","):
        runs = {"keras": [], "tfnas": []}
        for _ in range(args.rounds):
            for variant in runs:
                runs[variant].append(_trace(*SPACES[space], variant))
        for variant, rows in runs.items():
            for key in rows[0]:
                out[f"{space}_{variant}_{key}"] = round(statistics.median(r[key] for r in rows), 3)
        for key in runs["tfnas"][0]:
            out[f"{space}_ratio_{key}"] = round(out[f"{space}_tfnas_{key}"] /
                                                out[f"{space}_keras_{key}"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
