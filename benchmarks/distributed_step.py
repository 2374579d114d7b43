"""A search step on one replica against two replicas at the same global batch (tf.distribute).

The quickstart's GRUNAS supernet (`configs/quickstart.json`), batch 64, 32x32,
first-order alternation (a weight step on a training batch, then an architecture
step on a validation batch): `SearchModel.fit` under the default strategy and
under `MirroredStrategy` over two logical CPU devices, in one process, in rounds
that alternate the two (the first round, which traces, is left out). On a 2-core
CPU no speed-up is expected: the two replicas share the cores, so the ratio is
the overhead of splitting the batch, synchronizing batch normalization and
all-reducing the gradients.

The per-step communication volume is counted from the model: every trainable
weight's gradient in a weight step, the architecture logits' in an architecture
step, and each batch normalization's synchronized statistics (sum, sum of
squares and count per channel) in both. With a ring all-reduce each replica
sends and receives 2 (N - 1) / N times that volume per step; the JSON gives
those seconds for three interconnects, to add to a device's step time divided
by N (no overlap of communication with compute assumed).

    python benchmarks/distributed_step.py
    python benchmarks/distributed_step.py --batch 128 --rounds 5

Prints one JSON line.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="search steps per round")
    args = parser.parse_args()

    from tfnas import distribute  # pylint: disable=import-outside-toplevel

    mirrored = distribute.strategy({"strategy": "mirrored", "logical_cpus": 2})
    import keras  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfnas.config import load_config  # pylint: disable=import-outside-toplevel
    from tfnas.data import search_schedule  # pylint: disable=import-outside-toplevel
    from tfnas.spaces import get_space  # pylint: disable=import-outside-toplevel
    from tfnas.search_model import SearchModel  # pylint: disable=import-outside-toplevel

    config = load_config(os.path.join(os.path.dirname(__file__), "..", "configs",
                                      "quickstart.json"))
    space_config = {**config["space"]["config"], "num_classes": 10, "input_shape": [32, 32, 3]}
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.batch * 4, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, args.batch * 4)
    split = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch)
    data = search_schedule(split.repeat(), split.repeat()).prefetch(2)

    def build():
        keras.utils.set_random_seed(0)
        model = SearchModel(get_space("grunas", space_config).build_supernet(
            config["search"]["mixing"]), penalty=config["search"]["penalty"])
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      arch_optimizer=keras.optimizers.Adam(0.05))
        return model

    models = {"one_replica": build()}
    with mirrored.scope():
        models["two_replicas"] = build()

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    times = {name: [] for name in models}
    for round_ in range(args.rounds + 1):
        for name, model in models.items():
            timer = Timer()
            timer.times = []
            model.fit(data, epochs=1, steps_per_epoch=2 * args.steps, callbacks=[timer],
                      verbose=0)
            if round_:  # round 0 traces
                pairs = np.add(timer.times[0::2], timer.times[1::2])
                times[name].extend(pairs.tolist())

    model = models["one_replica"]
    float_bytes = 4
    weight_grads = sum(int(np.prod(v.shape)) for v in model.weight_variables) * float_bytes
    arch_grads = sum(int(np.prod(v.shape)) for v in model.architecture_variables) * float_bytes
    batch_norms = [layer for layer in model.supernet._flatten_layers()  # pylint: disable=protected-access
                   if isinstance(layer, keras.layers.BatchNormalization)]
    bn_stats = sum((2 * int(layer.gamma.shape[0]) + 1) * float_bytes for layer in batch_norms)
    volume = weight_grads + arch_grads + 2 * bn_stats  # one weight + one architecture step
    median = {name: float(np.median(t)) for name, t in times.items()}
    # Seconds of all-reduce per search step on N devices: 2 (N - 1) / N x volume / bandwidth.
    scaling = {}
    for bandwidth_name, bandwidth in (("pcie4_x16_25GBps", 25e9), ("nvlink_300GBps", 300e9),
                                      ("ethernet_10Gbps", 1.25e9)):
        scaling[bandwidth_name] = {
            n: round(2 * (n - 1) / n * volume / bandwidth, 9) for n in (2, 4, 8)}
    print(json.dumps({
        "benchmark": "distributed_step", "batch": args.batch, "rounds": args.rounds,
        "steps_per_round": args.steps, "median_search_step_s": median,
        "two_over_one": round(median["two_replicas"] / median["one_replica"], 3),
        "communication_bytes_per_search_step": {
            "weight_gradients": weight_grads, "architecture_gradients": arch_grads,
            "batch_norm_statistics": 2 * bn_stats, "total": volume},
        "allreduce_s_per_search_step_by_devices": scaling,
        "scaling": "step(N) = step(1) / N + allreduce(N) without overlap; ring all-reduce, "
                   "2 (N - 1) / N x the volume per device"}))


if __name__ == "__main__":
    main()
