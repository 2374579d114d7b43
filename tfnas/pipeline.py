"""The stages of a run: search, train, export; and the whole pipeline.

Each stage reads the run's configuration and writes into its `RunDirectory`;
the command line (`tfnas search|train|export|run`) calls these functions.
"""

import json
import os
import time

import keras
import numpy as np

from tfnas import data as data_lib
from tfnas import penalties
from tfnas.architecture import Architecture, count_parameters
from tfnas.builder import build_model
from tfnas.callbacks import ArchitectureLogger, ConvergenceStop, TemperatureAnnealing
from tfnas.costs import MacsCost, ParameterCost
from tfnas.deploy.report import count_macs, rows_from_summary, write_report
from tfnas.layers import mixing as mixing_rules
from tfnas.search_model import SearchModel
from tfnas.spaces import get_space

OPTIMIZERS = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam,
              "adamw": keras.optimizers.AdamW, "rmsprop": keras.optimizers.RMSprop}


def make_optimizer(config, total_steps):
    """A Keras optimizer from `{"name", "learning_rate", "schedule", **arguments}`."""
    config = dict(config)
    name = config.pop("name", "sgd")
    schedule = config.pop("schedule", "constant")
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}.")
    lr = config.pop("learning_rate")
    if schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, total_steps))
    elif schedule != "constant":
        raise ValueError(f"Unknown learning-rate schedule {schedule!r}; use 'cosine' or "
                         "'constant'.")
    try:
        return OPTIMIZERS[name](learning_rate=lr, **config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"Bad arguments for optimizer {name!r}: {err}") from None


def load_data(config):
    d = config["data"]
    splits = data_lib.load(d["dataset"], data_dir=d["data_dir"], val_fraction=d["val_fraction"],
                           download=d["download"])
    if d["limit"]:
        for key in ("train", "val", "full_train", "test"):
            setattr(splits, key, getattr(splits, key).take(d["limit"]))
            splits.sizes[key] = min(splits.sizes[key], d["limit"])
    return splits


def _batches(splits, config, split, training):
    d = config["data"]
    return data_lib.pipeline(getattr(splits, split), d["batch_size"], training=training,
                             augment=d["augment"], image_size=d["image_size"],
                             seed=config["seed"])


def _space(config, splits):
    space_config = dict(config["space"]["config"])
    space_config.setdefault("num_classes", splits.num_classes)
    size = config["data"]["image_size"]
    shape = splits.image_shape if size is None else (size, size, splits.image_shape[-1])
    space_config.setdefault("input_shape", list(shape))
    return get_space(config["space"]["name"], space_config)


def space_for(config):
    """The configured search space, with the dataset's classes and input shape filled in."""
    return _space(config, load_data(config))


def _steps(n, batch_size):
    return int(np.ceil(n / batch_size))


def build_supernet(config, space):
    s = config["search"]
    rule = mixing_rules.get(s["mixing"], temperature=s["temperature"]["initial"],
                            seed=config["seed"])
    return space.build_supernet(rule)


def build_cost(config, space, supernet):
    """The cost the penalty weighs (`search.cost`), over the supernet's mixing weights."""
    cost = config["search"]["cost"]
    if cost["type"] == "macs":
        return MacsCost.from_space(space)
    if cost["type"] == "latency":
        from tfnas.deploy.latency import LatencyCost  # pylint: disable=import-outside-toplevel

        return LatencyCost.from_table(cost["table"], space, supernet,
                                      unit=cost.get("unit", "ms"))
    return ParameterCost.from_supernet(supernet)


def build_search_model(config, space):
    supernet = build_supernet(config, space)
    return SearchModel(supernet, cost=build_cost(config, space, supernet),
                       penalty=penalties.get(config["search"]["penalty"]))


def search(config, run, verbose=2):
    """Runs the architecture search; writes `architecture.json` and the supernet's weights."""
    keras.utils.set_random_seed(config["seed"])
    s = config["search"]
    splits = load_data(config)
    space = _space(config, splits)
    model = build_search_model(config, space)
    bs = config["data"]["batch_size"]
    weight_steps = s["epochs"] * _steps(splits.sizes["train"], bs)
    arch_per_epoch = (_steps(splits.sizes["train"], bs) // s["arch_every"]
                      if s["alternation"] == "step" else _steps(splits.sizes["val"], bs))
    arch_steps = max(1, (s["epochs"] - s["warmup_epochs"]) * arch_per_epoch)
    model.compile(optimizer=make_optimizer(s["optimizer"], weight_steps),
                  arch_optimizer=make_optimizer(s["arch_optimizer"], arch_steps))
    t = s["temperature"]
    callbacks = [ArchitectureLogger(run.file("logs"), plot_blocks=s["plot_blocks"])]
    if s["mixing"].startswith("gumbel"):
        callbacks.insert(0, TemperatureAnnealing(t["initial"], t["rate"],
                                                 start_epoch=s["warmup_epochs"],
                                                 minimum=t["minimum"]))
    stop = None
    if s["convergence"]["patience"]:
        stop = ConvergenceStop(s["convergence"]["patience"],
                               s["convergence"]["entropy_threshold"])
        callbacks.append(stop)
    callbacks += [
        keras.callbacks.CSVLogger(run.file("logs", "search_history.csv"), append=True),
        keras.callbacks.BackupAndRestore(run.file("checkpoints", "search")),
    ]
    start = time.time()
    model.fit(_batches(splits, config, "train", True),
              arch_data=_batches(splits, config, "val", True), alternation=s["alternation"],
              arch_every=s["arch_every"],
              warmup_epochs=s["warmup_epochs"], epochs=s["epochs"], callbacks=callbacks,
              verbose=verbose)
    arch = model.derive_architecture(space, metadata={
        "search_seconds": round(time.time() - start, 1), "dataset": config["data"]["dataset"],
        "epochs": s["epochs"], "penalty": model.penalty.get_config(),
        "expected_cost": model.expected_cost(), "cost_unit": model.cost.unit,
        "converged_epoch": stop.stopped_epoch if stop else None})
    arch.save(run.file("architecture.json"), overwrite=True)
    model.supernet.save_weights(run.file("checkpoints", "supernet.weights.h5"))
    return arch, model.supernet


def load_supernet(run_path, config):
    """Rebuilds the supernet of a finished search run and loads its weights."""
    path = os.path.join(run_path, "checkpoints", "supernet.weights.h5")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No supernet weights at {path}: inheriting weights needs a "
                                "finished search run (or use --noinherit).")
    arch = Architecture.load(os.path.join(run_path, "architecture.json"))
    supernet = build_supernet(config, arch.search_space())
    supernet.load_weights(path)
    return supernet


def train(config, run, architecture, supernet=None, verbose=2):
    """Trains the derived model (from the supernet's weights when given); saves `model.keras`."""
    keras.utils.set_random_seed(config["seed"])
    tr = config["train"]
    splits = load_data(config)
    model = build_model(architecture, supernet=supernet if tr["inherit"] else None)
    steps = tr["epochs"] * _steps(splits.sizes["full_train"], config["data"]["batch_size"])
    model.compile(optimizer=make_optimizer(tr["optimizer"], steps),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    start = time.time()
    if tr["epochs"]:
        model.fit(_batches(splits, config, "full_train", True), epochs=tr["epochs"],
                  callbacks=[keras.callbacks.CSVLogger(run.file("logs", "train_history.csv"),
                                                       append=True),
                             keras.callbacks.BackupAndRestore(run.file("checkpoints",
                                                                       "train"))],
                  shuffle=False, verbose=verbose)
    result = model.evaluate(_batches(splits, config, "test", False), return_dict=True,
                            verbose=0)
    path = run.file("models", "model.keras")
    model.save(path)
    return model, {"test_accuracy": float(result["accuracy"]),
                   "test_loss": float(result["loss"]),
                   "train_seconds": round(time.time() - start, 1), "keras_model": path}


def export(config, run, model, verbose=True):
    """SavedModel and TFLite models under `models/`, each evaluated on test and timed on this host.

    int8 is calibrated on images of the training split.
    """
    from tfnas import deploy  # pylint: disable=import-outside-toplevel

    formats = config["export"]["formats"]
    result = {}
    if "saved_model" in formats:
        saved_model = deploy.export_saved_model(model, run.file("models", "saved_model"))
        result["saved_model"] = {"path": saved_model, "bytes": _dir_size(saved_model)}
    tflite_formats = [fmt for fmt in formats if fmt.startswith("tflite_")]
    if tflite_formats:
        result.update(_export_tflite(config, run, model, tflite_formats))
    if verbose:
        print(json.dumps(result, indent=2))
    return result


def _export_tflite(config, run, model, formats):
    from tfnas import deploy  # pylint: disable=import-outside-toplevel
    from tfnas.deploy.benchmark import benchmark_host  # pylint: disable=import-outside-toplevel
    from tfnas.deploy.lowering import fold_batch_norms  # pylint: disable=import-outside-toplevel

    splits = load_data(config)
    x, y = _arrays(splits, config, "test")
    calibration = _arrays(splits, config, "full_train",
                          limit=config["export"]["calibration_images"])[0]
    result, tflite_source = {}, None
    for fmt in formats:
        mode = fmt[len("tflite_"):]
        if mode == "int8_qat":
            path = _quantization_aware(config, run, model, calibration, splits)
        else:
            if tflite_source is None:
                # TFLite comes from an equal model with BatchNorms folded into grouped convs.
                tflite_source = deploy.export_saved_model(
                    fold_batch_norms(model), run.file("checkpoints", "tflite_source"))
            path = deploy.convert(tflite_source, run.file("models", f"model_{mode}.tflite"),
                                  mode, representative_data=[calibration],
                                  calibration_steps=len(calibration),
                                  per_channel=config["export"]["int8_per_channel"])
        result[fmt] = {"path": path, "bytes": os.path.getsize(path),
                       "test_accuracy": deploy.evaluate(path, x, y),
                       "host_latency": benchmark_host(path, num_threads=1)}
    return result


def _quantization_aware(config, run, model, calibration, splits):
    """Fine-tunes `model` with fake quantization (tfmot, tf_keras) and writes int8 TFLite."""
    from tfnas.deploy import ExportError  # pylint: disable=import-outside-toplevel

    try:
        from tfnas.deploy import qat  # pylint: disable=import-outside-toplevel
    except ImportError as err:
        raise ExportError(f"tflite_int8_qat: {err}") from None
    if not os.path.exists(run.file("architecture.json")):
        raise ExportError("tflite_int8_qat rebuilds the model from its architecture document; "
                          "pass --architecture PATH to tfnas export.")
    e = config["export"]
    path, history, _ = qat.train_and_convert(
        Architecture.load(run.file("architecture.json")), model,
        _batches(splits, config, "full_train", True), run.file("models", "model_int8_qat.tflite"),
        epochs=e["qat_epochs"], learning_rate=e["qat_learning_rate"],
        representative_data=[calibration], calibration_steps=len(calibration))
    run.write_json(os.path.join("logs", "qat_history.json"), history)
    return path


def _arrays(splits, config, split, limit=None):
    xs, ys = [], []
    data = _batches(splits, config, split, False)
    for x, y in (data if limit is None else data.unbatch().take(limit).batch(256)):
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def _dir_size(path):
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)


def run_all(config, run, verbose=2):
    """Search → architecture → retrain → export; writes and returns `summary.json`."""
    start = time.time()
    if run.resumed and os.path.exists(run.file("checkpoints", "supernet.weights.h5")):
        print(f"Resuming {run.path}: the search is complete, loading it.")
        arch, supernet = Architecture.load(run.file("architecture.json")), load_supernet(
            run.path, config)
    else:
        arch, supernet = search(config, run, verbose=verbose)
    if run.resumed and os.path.exists(run.file("summary_train.json")):
        print(f"Resuming {run.path}: the training is complete, loading it.")
        model = keras.saving.load_model(run.file("models", "model.keras"))
        trained = run.read_json("summary_train.json")
    else:
        model, trained = train(config, run, arch, supernet=supernet, verbose=verbose)
        run.write_json("summary_train.json", trained)
    exported = export(config, run, model, verbose=False)
    summary = {
        "run_dir": run.path,
        "space": arch.space,
        "choices": arch.choice_list(),
        "parameters": count_parameters(model),
        "macs": count_macs(model),
        "search_seconds": arch.metadata.get("search_seconds"),
        **trained,
        "exports": exported,
        "total_seconds": round(time.time() - start, 1),
    }
    run.write_json("summary.json", summary)
    write_report(rows_from_summary(summary), run.path, title=f"tfnas run {config['name']}")
    return summary


def format_summary(summary):
    lines = [f"tfnas run: {summary['run_dir']}",
             f"  architecture ({summary['space']}): {summary['choices']}",
             f"  trainable parameters: {summary['parameters']:,}, MACs: {summary['macs']:,}",
             f"  test accuracy (Keras): {summary['test_accuracy']:.4f}"]
    for fmt, info in summary["exports"].items():
        line = f"  {fmt}: {info['bytes'] / 1024:.1f} KiB"
        if "test_accuracy" in info:
            line += f", test accuracy {info['test_accuracy']:.4f}"
        if "host_latency" in info:
            line += f", {info['host_latency']['median_ms']:.2f} ms median (1 thread)"
        lines.append(line)
    lines.append(f"  report: {os.path.join(summary['run_dir'], 'report.md')}")
    lines.append(f"  time: {summary['total_seconds']:.0f} s")
    return "\n".join(lines)
