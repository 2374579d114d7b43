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
from tfnas.architecture import Architecture, ArchitectureError, count_parameters
from tfnas.backup import TrainingBackup
from tfnas.builder import build_model
from tfnas.callbacks import ArchitectureLogger, ConvergenceStop, TemperatureAnnealing
from tfnas.config import ConfigError
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
        raise ConfigError(f"Unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}.")
    lr = config.pop("learning_rate")
    if schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, total_steps))
    elif schedule != "constant":
        raise ConfigError(f"Unknown learning-rate schedule {schedule!r}; use 'cosine' or "
                         "'constant'.")
    try:
        return OPTIMIZERS[name](learning_rate=lr, **config)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"Bad arguments for optimizer {name!r}: {err}") from None


class Prepared:
    """A run's inputs, loaded and checked once: the data splits and the search space.

    Made by `prepare(config)` before a run writes anything, so that a dataset
    that cannot be loaded or a space that does not fit the data fails first.
    """

    def __init__(self, config, splits, space):
        self.config, self.splits, self.space = config, splits, space

    def batches(self, split, training, epoch=None):
        d = self.config["data"]
        return data_lib.pipeline(getattr(self.splits, split), d["batch_size"],
                                 training=training, augment=d["augment"],
                                 image_size=d["image_size"], seed=self.config["seed"],
                                 epoch=epoch)

    def steps(self, split):
        return _steps(self.splits.sizes[split], self.config["data"]["batch_size"])


def load_data(config):
    d = config["data"]
    splits = data_lib.load(d["dataset"], data_dir=d["data_dir"], val_fraction=d["val_fraction"],
                           download=d["download"])
    if d["limit"] is not None:
        for key in ("train", "val", "full_train", "test"):
            setattr(splits, key, getattr(splits, key).take(d["limit"]))
            splits.sizes[key] = min(splits.sizes[key], d["limit"])
    return splits


def _space(config, splits):
    space_config = dict(config["space"]["config"])
    size = config["data"]["image_size"]
    shape = splits.image_shape if size is None else (size, size, splits.image_shape[-1])
    given = {"num_classes": space_config.get("num_classes"),
             "input_shape": space_config.get("input_shape")}
    if given["num_classes"] is not None and given["num_classes"] != splits.num_classes:
        raise ConfigError(
            f"space.config.num_classes is {given['num_classes']!r} but dataset "
            f"{config['data']['dataset']!r} has {splits.num_classes} classes; leave "
            "num_classes out (it is taken from the data) or choose the matching dataset.")
    if given["input_shape"] is not None and list(given["input_shape"]) != list(shape):
        raise ConfigError(
            f"space.config.input_shape is {given['input_shape']!r} but the data gives images "
            f"of shape {list(shape)}; leave input_shape out (it is taken from the data and "
            "data.image_size) or set data.image_size.")
    space_config.setdefault("num_classes", splits.num_classes)
    space_config.setdefault("input_shape", list(shape))
    return get_space(config["space"]["name"], space_config)


def prepare(config):
    """Loads the data and builds the search space of `config` (see `Prepared`).

    Also builds the penalty and the optimizers once, so that a bad value in
    those open sections is an error before a run starts.
    """
    s = config["search"]
    penalties.get(s["penalty"])
    for section in ("search.optimizer", "search.arch_optimizer", "train.optimizer"):
        a, b = section.split(".")
        try:
            make_optimizer(config[a][b], 1)
        except ConfigError as err:
            raise ConfigError(f"{section}: {err}") from None
    splits = load_data(config)
    return Prepared(config, splits, _space(config, splits))


def check_architecture(architecture, prepared):
    """An architecture fits the data it is to be trained on: classes and input shape."""
    classes = architecture.space_config.get("num_classes")
    if classes is not None and classes != prepared.splits.num_classes:
        raise ArchitectureError(
            f"The architecture has {classes} classes but dataset "
            f"{prepared.config['data']['dataset']!r} has {prepared.splits.num_classes}; train "
            "it on data with the same classes, or search again on this dataset.")
    shape = architecture.space_config.get("input_shape")
    if shape is not None and list(shape) != list(prepared.space.config["input_shape"]):
        raise ArchitectureError(
            f"The architecture takes inputs of shape {list(shape)} but the data gives "
            f"{list(prepared.space.config['input_shape'])}; set data.image_size to match, or "
            "search again on this data.")


def space_for(config):
    """The configured search space, with the dataset's classes and input shape filled in."""
    return prepare(config).space


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


def search(config, run, verbose=2, prepared=None):
    """Runs the architecture search; writes `architecture.json` and the supernet's weights.

    A search that finished in `run` before is loaded, not run again; one that
    was interrupted continues from its last epoch (see `tfnas.backup`).
    """
    if run.stage_done("search"):
        print(f"Resuming {run.path}: the search is complete, loading it.")
        return Architecture.load(run.file("architecture.json")), load_supernet(run.path, config)
    keras.utils.set_random_seed(config["seed"])
    prepared = prepared or prepare(config)
    s = config["search"]
    space = prepared.space
    model = build_search_model(config, space)
    n_train, n_val = prepared.steps("train"), prepared.steps("val")
    weight_steps = s["epochs"] * n_train
    arch_per_epoch = n_train // s["arch_every"] if s["alternation"] == "step" else n_val
    arch_steps = max(1, (s["epochs"] - s["warmup_epochs"]) * arch_per_epoch)
    model.compile(optimizer=make_optimizer(s["optimizer"], weight_steps),
                  arch_optimizer=make_optimizer(s["arch_optimizer"], arch_steps))
    t = s["temperature"]
    logger = ArchitectureLogger(run.file("logs"), plot_blocks=s["plot_blocks"])
    callbacks = [logger]
    if s["mixing"].startswith("gumbel"):
        callbacks.insert(0, TemperatureAnnealing(t["initial"], t["rate"],
                                                 start_epoch=s["warmup_epochs"],
                                                 minimum=t["minimum"]))
    stop = None
    if s["convergence"]["patience"]:
        stop = ConvergenceStop(s["convergence"]["patience"],
                               s["convergence"]["entropy_threshold"])
        callbacks.append(stop)
    history = run.file("logs", "search_history.csv")
    backup = TrainingBackup(run.file("checkpoints", "search"),
                            stateful={"convergence": stop} if stop else None,
                            csv_logs={history: 0, logger.csv_path: 1})
    callbacks += [keras.callbacks.CSVLogger(history, append=True), backup]
    print(f"== search: {s['epochs']} epochs ({s['warmup_epochs']} weights only), "
          f"{space.name} space with {len(space.blocks())} blocks, "
          f"{prepared.splits.sizes['train']} + {prepared.splits.sizes['val']} images")
    initial_epoch = backup.restore(model)
    if initial_epoch:
        print(f"Resuming {run.path}: the search continues from epoch {initial_epoch + 1}.")
    steps = (n_train + n_train // s["arch_every"] if s["alternation"] == "step"
             else n_train + n_val)

    def epoch_batches(epoch):
        return data_lib.search_schedule(prepared.batches("train", True, epoch),
                                        prepared.batches("val", True, epoch),
                                        alternation=s["alternation"], arch_every=s["arch_every"])

    last = initial_epoch if backup.finished else s["epochs"]
    model.fit(data_lib.epochs(epoch_batches, initial_epoch, max(last, initial_epoch + 1)),
              warmup_epochs=s["warmup_epochs"], epochs=last, initial_epoch=initial_epoch,
              steps_per_epoch=steps, callbacks=callbacks, verbose=verbose)
    arch = model.derive_architecture(space, metadata={
        "search_seconds": round(backup.elapsed(), 1), "dataset": config["data"]["dataset"],
        "epochs": s["epochs"], "penalty": model.penalty.get_config(),
        "expected_cost": model.expected_cost(), "cost_unit": model.cost.unit,
        "converged_epoch": stop.stopped_epoch if stop else None})
    arch.save(run.file("architecture.json"), overwrite=True)
    model.supernet.save_weights(run.file("checkpoints", "supernet.weights.h5"), overwrite=True)
    run.finish_stage("search")
    backup.discard()
    return arch, model.supernet


def load_supernet(run_path, config):
    """Rebuilds the supernet of a finished search run and loads its weights."""
    path = os.path.join(run_path, "checkpoints", "supernet.weights.h5")
    arch_path = os.path.join(run_path, "architecture.json")
    if not (os.path.exists(path) and os.path.exists(arch_path)):
        raise ConfigError(f"{run_path} is not a finished search run (it lacks "
                          f"{'checkpoints/supernet.weights.h5' if not os.path.exists(path) else 'architecture.json'}): "
                          "point --inherit_from at a search run directory, or train from "
                          "scratch with --set train.inherit=false.")
    arch = Architecture.load(arch_path)
    supernet = build_supernet(config, arch.search_space())
    try:
        supernet.load_weights(path)
    except Exception as err:  # pylint: disable=broad-except
        raise ConfigError(f"Cannot load the supernet weights {path} ({type(err).__name__}: "
                          f"{str(err)[:200]}); the search run was made with another config "
                          "or its file is damaged.") from None
    return supernet


def train(config, run, architecture, supernet=None, verbose=2, prepared=None):
    """Trains the derived model (from the supernet's weights when given); saves `model.keras`.

    An interrupted training continues from its last epoch; a finished one is
    loaded from `run`.
    """
    if run.stage_done("train"):
        print(f"Resuming {run.path}: the training is complete, loading it.")
        return (keras.saving.load_model(run.file("models", "model.keras")),
                run.read_json("summary_train.json"))
    keras.utils.set_random_seed(config["seed"])
    prepared = prepared or prepare(config)
    tr = config["train"]
    check_architecture(architecture, prepared)
    model = build_model(architecture, supernet=supernet if tr["inherit"] else None)
    steps = prepared.steps("full_train")
    model.compile(optimizer=make_optimizer(tr["optimizer"], tr["epochs"] * steps),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = run.file("logs", "train_history.csv")
    backup = TrainingBackup(run.file("checkpoints", "train"), csv_logs={history: 0})
    print(f"== train: {tr['epochs']} epochs on {prepared.splits.sizes['full_train']} images, "
          f"{'from the supernet' if supernet is not None and tr['inherit'] else 'from scratch'}")
    initial_epoch = backup.restore(model)
    if initial_epoch:
        print(f"Resuming {run.path}: the training continues from epoch {initial_epoch + 1}.")
    if tr["epochs"] > initial_epoch:
        model.fit(data_lib.epochs(lambda e: prepared.batches("full_train", True, e),
                                  initial_epoch, tr["epochs"]),
                  epochs=tr["epochs"], initial_epoch=initial_epoch, steps_per_epoch=steps,
                  callbacks=[keras.callbacks.CSVLogger(history, append=True), backup],
                  shuffle=False, verbose=verbose)
    result = model.evaluate(prepared.batches("test", False), return_dict=True, verbose=0)
    path = run.file("models", "model.keras")
    model.save(path)
    summary = {"test_accuracy": float(result["accuracy"]), "test_loss": float(result["loss"]),
               "train_seconds": round(backup.elapsed(), 1), "keras_model": path}
    run.write_json("summary_train.json", summary)
    run.finish_stage("train")
    backup.discard()
    return model, summary


def export(config, run, model, verbose=True, prepared=None):
    """SavedModel and TFLite models under `models/`, each evaluated on test and timed on this host.

    int8 is calibrated on images of the training split.
    """
    from tfnas import deploy  # pylint: disable=import-outside-toplevel

    formats = config["export"]["formats"]
    if formats:
        print(f"== export: {', '.join(formats)}")
    result = {}
    if "saved_model" in formats:
        saved_model = deploy.export_saved_model(model, run.file("models", "saved_model"))
        result["saved_model"] = {"path": saved_model, "bytes": _dir_size(saved_model)}
    tflite_formats = [fmt for fmt in formats if fmt.startswith("tflite_")]
    if tflite_formats:
        result.update(_export_tflite(config, run, model, tflite_formats,
                                     prepared or prepare(config)))
    if verbose:
        print(json.dumps(result, indent=2))
    return result


def _export_tflite(config, run, model, formats, prepared):
    from tfnas import deploy  # pylint: disable=import-outside-toplevel
    from tfnas.deploy.benchmark import benchmark_host  # pylint: disable=import-outside-toplevel
    from tfnas.deploy.lowering import fold_batch_norms  # pylint: disable=import-outside-toplevel

    x, y = _arrays(prepared, "test")
    calibration = _arrays(prepared, "full_train",
                          limit=config["export"]["calibration_images"])[0]
    result, tflite_source = {}, None
    for fmt in formats:
        mode = fmt[len("tflite_"):]
        if mode == "int8_qat":
            path = _quantization_aware(config, run, model, calibration, prepared)
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


def _quantization_aware(config, run, model, calibration, prepared):
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
        prepared.batches("full_train", True), run.file("models", "model_int8_qat.tflite"),
        epochs=e["qat_epochs"], learning_rate=e["qat_learning_rate"],
        representative_data=[calibration], calibration_steps=len(calibration))
    run.write_json(os.path.join("logs", "qat_history.json"), history)
    return path


def _arrays(prepared, split, limit=None):
    xs, ys = [], []
    data = prepared.batches(split, False)
    for x, y in (data if limit is None else data.unbatch().take(limit).batch(256)):
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def _dir_size(path):
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)


def run_all(config, run, verbose=2, prepared=None):
    """Search → architecture → retrain → export; writes and returns `summary.json`.

    In a resumed run, finished stages are loaded and an interrupted one continues.
    """
    start = time.time()
    prepared = prepared or prepare(config)
    arch, supernet = search(config, run, verbose=verbose, prepared=prepared)
    model, trained = train(config, run, arch, supernet=supernet, verbose=verbose,
                           prepared=prepared)
    if run.stage_done("export"):
        print(f"Resuming {run.path}: the export is complete, loading it.")
        exported = run.read_json("summary.json")["exports"]
    else:
        exported = export(config, run, model, verbose=False, prepared=prepared)
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
    run.finish_stage("export")
    write_report(rows_from_summary(summary), run.path, title=f"tfnas run {config['name']}")
    run.finish_stage("run")
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
