"""Training-step time of the GRUNAS paper network: tfnas layers against Keras Conv2D(groups).

Prints one JSON line. All variants are measured side by side in one process,
interleaved round by round, and compared as ratios of medians.

    python benchmarks/grunas_step.py [--batch 128] [--rounds 5] [--no-supernet]
"""

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfnas.search_model import SearchModel  # noqa: E402
from tfnas.spaces import get_space  # noqa: E402
from tfnas.spaces.grunas import PAPER_WIDTHS  # noqa: E402

PAPER_H = [4, 1, 1, 2, 2, 3, 2, 4, 4, 6]


def keras_groups_network(space, groups):
    """The same network with Keras `Conv2D(groups=g)` for the grouped 1x1 conv.

    Keras needs g to divide both channel counts; where it does not (unit 1,
    6 -> 12 channels, g = 4) the largest g' <= g that does is used.
    """
    from tfnas.layers import ChannelShuffle  # pylint: disable=import-outside-toplevel

    inputs = keras.Input((32, 32, 3))
    x = space._stem(inputs)  # pylint: disable=protected-access
    for (cin, cout), g in zip(PAPER_WIDTHS, groups):
        e, o = cin // 2, (cout if cin == cout else cout // 2)
        kg = max(d for d in range(1, g + 1) if e % d == 0 and o % d == 0)
        y = keras.layers.Conv2D(e, 1, use_bias=False)(x)
        y = keras.layers.ReLU()(keras.layers.BatchNormalization()(y))
        y = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(y)
        y = keras.layers.BatchNormalization()(keras.layers.Conv2D(o, 1, groups=kg,
                                                                  use_bias=False)(y))
        x = keras.layers.Add()([x, y]) if cin == cout else keras.layers.Concatenate()([x, y])
        x = ChannelShuffle(g)(keras.layers.ReLU()(x))
    return keras.Model(inputs, space._head(x))  # pylint: disable=protected-access


def compiled(model):
    model.compile(optimizer=keras.optimizers.SGD(0.08, momentum=0.95),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def search_step_fn(space, batch):
    search = SearchModel(space.build_supernet("gumbel"))
    search.compile(optimizer=keras.optimizers.SGD(0.08, momentum=0.95),
                   arch_optimizer=keras.optimizers.Adam(0.01))
    search.make_train_function()
    x = tf.random.uniform((batch, 32, 32, 3), 0, 255)
    y = tf.random.uniform((batch,), 0, 10, tf.int64)
    weight = iter(tf.data.Dataset.from_tensors((x, y, tf.constant(0))).repeat())
    arch = iter(tf.data.Dataset.from_tensors((x, y, tf.constant(1))).repeat())
    return {"supernet_weight_step": lambda: search.train_function(weight),
            "supernet_arch_step": lambda: search.train_function(arch)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-supernet", action="store_true")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    space = get_space("grunas")
    x = np.random.uniform(0, 255, (args.batch, 32, 32, 3)).astype("float32")
    y = np.random.randint(0, 10, (args.batch,))
    models = {
        "tfnas": compiled(space.build_model(dict(zip(space.blocks(), PAPER_H)))),
        "keras_conv2d_groups": compiled(keras_groups_network(space, PAPER_H)),
        "tfnas_all_g1": compiled(space.build_model({b: 1 for b in space.blocks()})),
    }
    steps = {name: (lambda m=m: m.train_on_batch(x, y)) for name, m in models.items()}
    if not args.no_supernet:
        steps.update(search_step_fn(space, args.batch))
    for step in steps.values():  # trace and warm up
        step()
        step()
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    median = {name: float(np.median(t)) for name, t in times.items()}
    result = {
        "benchmark": "grunas_train_step",
        "batch": args.batch,
        "rounds": args.rounds,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "median_seconds": {k: round(v, 4) for k, v in median.items()},
        "speedup_vs_keras_conv2d_groups": round(median["keras_conv2d_groups"]
                                                / median["tfnas"], 2),
        "reference_pytorch_seconds": 1.67,
    }
    if not args.no_supernet:
        result["supernet_weight_step_over_derived"] = round(
            median["supernet_weight_step"] / median["tfnas"], 2)
        result["supernet_arch_step_over_derived"] = round(
            median["supernet_arch_step"] / median["tfnas"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
