"""Exports of the GRUNAS paper network trained briefly on the bundled data: size, accuracy, latency.

Prints one JSON line: per TFLite format, file size, top-1 on the bundled test split next to the
Keras float model, and host latency (LiteRT, batch 1, one thread, interleaved rounds), with the
int8/float32 latency ratio; quantization-aware int8 from both backends side by side (native
Keras 3 fake quantization and tfmot), each against the float model fine-tuned the same way,
against post-training int8 in bytes and latency.

    python benchmarks/deploy_grunas.py [--epochs 5] [--rounds 5]
"""

import argparse
import json
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfnas import data, deploy  # noqa: E402
from tfnas.deploy.benchmark import benchmark_host  # noqa: E402
from tfnas.deploy.lowering import fold_batch_norms  # noqa: E402
from tfnas.spaces import get_space  # noqa: E402

PAPER_H = [4, 1, 1, 2, 2, 3, 2, 4, 4, 6]


def _with_extra_test(x_test, y_test, path, bundled):
    """The bundled test split plus the images of `path` that the bundled set does not hold."""
    import hashlib  # pylint: disable=import-outside-toplevel

    def key(image):
        return hashlib.md5(np.ascontiguousarray(image, np.uint8).tobytes()).hexdigest()

    seen = {key(x) for split in ("x_train", "x_val", "x_test") for x in bundled[split]}
    extra = np.load(path)
    keep = [i for i, x in enumerate(extra["x"]) if key(x) not in seen]
    return (np.concatenate([x_test, extra["x"][keep].astype("float32")]),
            np.concatenate([y_test, extra["y"][keep].astype(y_test.dtype)]))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per_channel", action="store_true", help="per-channel int8 weights")
    parser.add_argument("--qat_epochs", type=int, default=4)
    parser.add_argument("--qat_learning_rate", type=float, default=3e-4)
    parser.add_argument("--qat_backends", default="native,tfmot",
                        help="comma-separated: native (Keras 3 fake quantization), tfmot")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra_test", default=None,
                        help="an .npz (keys x, y) of more CIFAR-10 images to evaluate on; images "
                             "of the bundled set are dropped (350 test images cannot resolve "
                             "half a point)")
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)
    space = get_space("grunas")
    model = space.build_model(dict(zip(space.blocks(), PAPER_H)))
    splits = data.load("bundled")
    steps_per_epoch = int(np.ceil(splits.sizes["full_train"] / 64))
    # Cosine decay, as the pipeline trains: a model still jumping at a constant learning rate
    # makes every accuracy comparison a coin toss.
    model.compile(optimizer=keras.optimizers.SGD(
        keras.optimizers.schedules.CosineDecay(0.05, max(1, args.epochs * steps_per_epoch)),
        momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(data.pipeline(splits.full_train, 64, training=True, seed=args.seed),
              epochs=args.epochs, verbose=0)
    arrays = data.load_bundled_arrays()
    x_test, y_test = arrays["x_test"].astype("float32"), arrays["y_test"]
    if args.extra_test:
        x_test, y_test = _with_extra_test(x_test, y_test, args.extra_test, arrays)
    keras_acc = float(model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"])
    out = tempfile.mkdtemp()
    saved = deploy.export_saved_model(fold_batch_norms(model), os.path.join(out, "saved_model"))
    calibration = arrays["x_train"][:200].astype("float32")
    result = {"benchmark": "grunas_deploy", "epochs": args.epochs, "seed": args.seed,
              "test_images": int(len(y_test)),
              "keras_accuracy": keras_acc,
              "formats": {}}
    paths = {}
    for mode in deploy.MODES:
        paths[mode] = deploy.convert(saved, os.path.join(out, f"{mode}.tflite"), mode,
                                     representative_data=[calibration], calibration_steps=200,
                                     per_channel=args.per_channel)
        result["formats"][mode] = {"bytes": os.path.getsize(paths[mode]),
                                   "accuracy": deploy.evaluate(paths[mode], x_test, y_test)}
    train_data = data.pipeline(splits.full_train, 64, training=True, seed=args.seed)
    backends = [b for b in args.qat_backends.split(",") if b] if args.qat_epochs else []
    for backend in backends:
        out_path = os.path.join(out, f"int8_qat_{backend}.tflite")
        keras.utils.set_random_seed(args.seed)
        if backend == "native":
            from tfnas.deploy import quantize  # pylint: disable=import-outside-toplevel

            paths[f"int8_qat_{backend}"], _, qat_model = quantize.train_and_convert(
                model, train_data, out_path, epochs=args.qat_epochs,
                learning_rate=args.qat_learning_rate, representative_data=[calibration],
                calibration_steps=200)
            fake_quant = keras.ops.convert_to_numpy(qat_model.predict(x_test, verbose=0))
        else:
            from tfnas.architecture import Architecture  # pylint: disable=C0415
            from tfnas.deploy import qat  # pylint: disable=import-outside-toplevel

            arch = Architecture("grunas", space.config, dict(zip(space.blocks(), PAPER_H)))
            paths[f"int8_qat_{backend}"], _, qat_model = qat.train_and_convert(
                arch, model, train_data, out_path, epochs=args.qat_epochs,
                learning_rate=args.qat_learning_rate, representative_data=[calibration],
                calibration_steps=200)
            fake_quant = qat_model.predict(x_test, verbose=0)
        result["formats"][f"int8_qat_{backend}"] = {
            "bytes": os.path.getsize(out_path),
            "accuracy": deploy.evaluate(out_path, x_test, y_test),
            "fake_quant_keras_accuracy": float(np.mean(np.argmax(fake_quant, -1) == y_test))}
    if backends:
        # The same fine-tuning without fake quantization: the float model QAT is compared with.
        keras.utils.set_random_seed(args.seed)
        tuned = keras.models.clone_model(model)
        tuned.set_weights(model.get_weights())
        tuned.compile(optimizer=keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(
            args.qat_learning_rate, args.qat_epochs * steps_per_epoch), momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        tuned.fit(train_data, epochs=args.qat_epochs, verbose=0)
        result["keras_finetuned_accuracy"] = float(
            tuned.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"])
    medians = {mode: [] for mode in paths}
    for _ in range(args.rounds):
        for mode, path in paths.items():
            medians[mode].append(benchmark_host(path, num_threads=1, warmup_runs=20,
                                                num_runs=200)["median_ms"])
    for mode in paths:
        result["formats"][mode]["median_ms"] = float(np.median(medians[mode]))
    f32, i8 = result["formats"]["float32"], result["formats"]["int8"]
    result["int8_speedup_over_float32"] = round(f32["median_ms"] / i8["median_ms"], 3)
    result["int8_accuracy_drop_points"] = round(100 * (keras_acc - i8["accuracy"]), 2)
    for backend in backends:
        q = result["formats"][f"int8_qat_{backend}"]
        # QAT fine-tunes further than the float model was trained: compare its int8 file with
        # the float model fine-tuned the same way, and with the fake-quantized model itself.
        result[f"int8_qat_{backend}"] = {
            "drop_vs_finetuned_float_points": round(
                100 * (result["keras_finetuned_accuracy"] - q["accuracy"]), 2),
            "drop_vs_trained_float_points": round(100 * (keras_acc - q["accuracy"]), 2),
            "vs_fake_quant_points": round(100 * (q["fake_quant_keras_accuracy"]
                                                 - q["accuracy"]), 2),
            "bytes_minus_int8_bytes": q["bytes"] - i8["bytes"],
            "latency_ratio_to_int8": round(q["median_ms"] / i8["median_ms"], 3)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
