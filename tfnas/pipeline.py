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
from tfnas import determinism, distribute
from tfnas.architecture import Architecture, ArchitectureError, count_parameters
from tfnas.backup import TrainingBackup
from tfnas.builder import build_model
from tfnas.layers.cell_ops import DropPathSchedule, drop_path_layers
from tfnas.config import ConfigError
from tfnas.deploy.report import count_macs, rows_from_summary, write_report
from tfnas.methods import get_method
from tfnas.optimizers import make_optimizer
from tfnas.spaces import SearchSpace, get_space
from tfnas.spaces.base import check_parameters


class Prepared:
    """A run's inputs, loaded and checked once: the data splits, the search space and
    the search method.

    Made by `prepare(config)` before a run writes anything, so that a dataset
    that cannot be loaded, a space that does not fit the data or a bad method
    setting fails first.
    """

    def __init__(self, config, splits, space):
        self.config, self.splits, self.space = config, splits, space
        self.method = get_method(config, self)

    def batches(self, split, training, epoch=None, cutout=0):
        d = self.config["data"]
        return data_lib.pipeline(getattr(self.splits, split), d["batch_size"],
                                 training=training, augment=d["augment"],
                                 image_size=d["image_size"], seed=self.config["seed"],
                                 epoch=epoch, cutout=cutout)

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
    space = get_space(config["space"]["name"], space_config)
    # Unusual sizes: the parameters are counted before anything allocates them.
    check_parameters(space, {b: space.candidates(b)[-1] for b in space.blocks()},
                     "The configured space's network")
    return space


def prepare(config):
    """Loads the data and builds the search space and method of `config` (see `Prepared`).

    The method builds what its section configures (penalty, optimizers, mixing
    rule) and the training optimizer is built once, so that a bad value in
    an open section is an error before a run starts.
    """
    # First: determinism applies to functions traced after it; a multi-worker strategy
    # and logical CPUs must exist before TensorFlow's runtime starts.
    determinism.configure(config["deterministic"])
    distribute.strategy(config["distribute"])
    try:
        make_optimizer(config["train"]["optimizer"], 1)
    except ConfigError as err:
        raise ConfigError(f"train.optimizer: {err}") from None
    splits = load_data(config)
    prepared = Prepared(config, splits, _space(config, splits))
    tr = config["train"]
    if (tr["drop_path"] or tr["auxiliary_weight"]) and \
            type(prepared.space).training_model is SearchSpace.training_model:
        raise ConfigError(f"train.drop_path and train.auxiliary_weight need a space that "
                          f"builds them (SearchSpace.training_model); "
                          f"{prepared.space.name!r} does not. Set them to 0.")
    if tr["cutout"] and not config["data"]["augment"]:
        raise ConfigError("train.cutout augments the retraining batches, and data.augment is "
                          "false; set data.augment to true or train.cutout to 0.")
    return prepared


def check_architecture(architecture, prepared):
    """An architecture fits the recipe (its space) and the data it is to be trained on
    (classes and input shape)."""
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
    space = prepared.space
    own = architecture.search_space().config  # with the space's defaults
    changed = sorted(k for k in set(own) | set(space.config)
                     if k not in ("num_classes", "input_shape")
                     and own.get(k) != space.config.get(k))
    if architecture.space != space.name or changed:
        differs = (f"space {architecture.space!r}, the recipe's is {space.name!r}"
                   if architecture.space != space.name else
                   f"space {space.name!r} configured otherwise than the recipe ({', '.join(changed)})")
        raise ArchitectureError(
            f"The architecture is of {differs}, so config.json would not say what is trained. "
            "Pass the recipe it was searched with (--config), or add --architecture_space to "
            "train the document's space and record it in config.json.")


def _steps(n, batch_size):
    return int(np.ceil(n / batch_size))


def search(config, run, verbose=2, prepared=None):
    """Runs the configured search method; writes `architecture.json`.

    Returns `(architecture, searched)`: `searched` is what the method hands to
    training (the supernet of a differentiable search). A search that finished
    in `run` before is loaded, not run again; one that was interrupted
    continues where the method's checkpoints left it.
    """
    prepared = prepared or prepare(config)
    method = prepared.method
    if run.stage_done("search"):
        print(f"Resuming {run.path}: the search is complete, loading it.")
        return Architecture.load(run.file("architecture.json")), method.load(run.path)
    keras.utils.set_random_seed(config["seed"])
    with method.distribution_scope():
        arch, searched = method.search(run, verbose=verbose)
    arch.save(run.file("architecture.json"), overwrite=True)
    run.finish_stage("search")
    return arch, searched


def load_search(run_path, config, prepared=None):
    """What the finished search in `run_path` hands to training (`--inherit_from`)."""
    return (prepared or prepare(config)).method.load(run_path)


def train(config, run, architecture, searched=None, verbose=2, prepared=None):
    """Trains the derived model; saves `model.keras`.

    With `train.inherit`, the model starts from what the search learned
    (`searched`, as `search` returns it, handed to the method's `inherit`).

    An interrupted training continues from its last epoch; a finished one is
    loaded from `run`.
    """
    if run.stage_done("train"):
        print(f"Resuming {run.path}: the training is complete, loading it.")
        return (keras.saving.load_model(run.file("models", "model.keras")),
                run.read_json("summary_train.json"))
    keras.utils.set_random_seed(config["seed"])
    prepared = prepared or prepare(config)
    check_architecture(architecture, prepared)
    with distribute.scope(config["distribute"]):
        model, summary = _train(config, run, architecture, searched, verbose, prepared)
    run.write_json("summary_train.json", summary)
    run.finish_stage("train")
    return model, summary


def _train(config, run, architecture, searched, verbose, prepared):
    tr = config["train"]
    model, trainer, batches = _training_model(architecture, tr, prepared)
    inherited = tr["inherit"] and prepared.method.inherit(searched, architecture, model)
    steps = prepared.steps("full_train")
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = make_optimizer(tr["optimizer"], tr["epochs"] * steps)
    if trainer is model:
        model.compile(optimizer=optimizer, loss=ce, metrics=["accuracy"])
    else:  # the auxiliary head's loss joins the model's, weighted
        trainer.compile(optimizer=optimizer, loss=[ce, ce],
                        loss_weights=[1.0, tr["auxiliary_weight"]], metrics=[["accuracy"], []])
        model.compile(loss=ce, metrics=["accuracy"])
    history = run.file("logs", "train_history.csv")
    backup = TrainingBackup(run.file("checkpoints", "train"), csv_logs={history: 0})
    callbacks = [keras.callbacks.CSVLogger(history, append=True), backup]
    distribute.synchronize_batch_norms(trainer)
    if drop_path_layers(model):
        callbacks.insert(0, DropPathSchedule(tr["epochs"]))
    print(f"== train: {tr['epochs']} epochs on {prepared.splits.sizes['full_train']} images, "
          f"{'from the search' if inherited else 'from scratch'}")
    initial_epoch = backup.restore(trainer)
    if initial_epoch:
        print(f"Resuming {run.path}: the training continues from epoch {initial_epoch + 1}.")
    if tr["epochs"] > initial_epoch:
        trainer.fit(data_lib.epochs(batches, initial_epoch, tr["epochs"]),
                    epochs=tr["epochs"], initial_epoch=initial_epoch, steps_per_epoch=steps,
                    callbacks=callbacks, shuffle=False, verbose=verbose)
    result = model.evaluate(prepared.batches("test", False), return_dict=True, verbose=0)
    path = run.file("models", "model.keras")
    model.save(path)
    summary = {"test_accuracy": float(result["accuracy"]), "test_loss": float(result["loss"]),
               "train_seconds": round(backup.elapsed(), 1), "keras_model": path}
    backup.discard()
    return model, summary


def _training_model(architecture, train_config, prepared):
    """`(model, trainer, batches)`: the model to save, the model `fit` trains (the model
    with its auxiliary head's output, if the space builds one) and its epoch's batches."""
    drop_path, auxiliary_weight = train_config["drop_path"], train_config["auxiliary_weight"]
    batches = lambda e: prepared.batches("full_train", True, e,  # noqa: E731
                                         cutout=train_config["cutout"])
    if not (drop_path or auxiliary_weight):
        model = build_model(architecture)
        return model, model, batches
    model, auxiliary = architecture.search_space().training_model(
        architecture.choices, drop_path=drop_path, auxiliary_weight=auxiliary_weight)
    if auxiliary is None:
        return model, model, batches
    trainer = keras.Model(model.inputs, [model.outputs[0], auxiliary],
                          name=f"{model.name}_with_auxiliary_head")
    return model, trainer, lambda e: batches(e).map(data_lib.as_written(lambda x, y: (x, (y, y))))


def export(config, run, model, verbose=True, prepared=None, fit_verbose=2):
    """SavedModel and TFLite models under `models/`, each evaluated on test and timed on this host.

    int8 is calibrated on images of the training split. Each stage prints a line when
    it starts, and QAT's fine-tuning shows Keras's progress (`fit_verbose`), so that a
    slow stage of a large network is not taken for a hang.
    """
    from tfnas import deploy  # pylint: disable=import-outside-toplevel

    formats = config["export"]["formats"]
    if formats:
        print(f"== export: {', '.join(formats)}", flush=True)
    result = {}
    if "saved_model" in formats:
        _stage("saved_model: writing")
        saved_model = deploy.export_saved_model(model, run.file("models", "saved_model"))
        result["saved_model"] = {"path": saved_model, "bytes": _dir_size(saved_model)}
    tflite_formats = [fmt for fmt in formats if fmt.startswith("tflite_")]
    if tflite_formats:
        result.update(_export_tflite(config, run, model, tflite_formats,
                                     prepared or prepare(config), fit_verbose))
    if verbose:
        print(json.dumps(result, indent=2))
    return result


def _stage(text):
    print(f"   {time.strftime('%H:%M:%S')} {text}", flush=True)


def _export_tflite(config, run, model, formats, prepared, fit_verbose):
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
            path = _quantization_aware(config, run, model, calibration, prepared, fit_verbose)
        else:
            _stage(f"{fmt}: converting")
            if tflite_source is None:
                # TFLite comes from an equal model with BatchNorms folded into grouped convs.
                tflite_source = deploy.export_saved_model(
                    fold_batch_norms(model), run.file("checkpoints", "tflite_source"))
            path = deploy.convert(tflite_source, run.file("models", f"model_{mode}.tflite"),
                                  mode, representative_data=[calibration],
                                  calibration_steps=len(calibration),
                                  per_channel=config["export"]["int8_per_channel"])
        _stage(f"{fmt}: testing on {len(x)} images and timing in LiteRT")
        result[fmt] = {"path": path, "bytes": os.path.getsize(path),
                       "test_accuracy": deploy.evaluate(path, x, y),
                       "host_latency": benchmark_host(path, num_threads=1)}
    return result


def _quantization_aware(config, run, model, calibration, prepared, fit_verbose):
    """Fine-tunes `model` with fake quantization and writes int8 TFLite (`export.qat_backend`:
    "native" rewrites the Keras 3 model of any space, "tfmot" rebuilds it in tf_keras)."""
    from tfnas.deploy import ExportError  # pylint: disable=import-outside-toplevel

    e = config["export"]
    path = run.file("models", "model_int8_qat.tflite")
    common = {"epochs": e["qat_epochs"], "learning_rate": e["qat_learning_rate"],
              "representative_data": [calibration], "calibration_steps": len(calibration),
              "verbose": fit_verbose}
    _stage(f"tflite_int8_qat: fake-quantizing ({e['qat_backend']}), calibrating ranges, "
           f"fine-tuning {e['qat_epochs']} epochs, converting")
    if e["qat_backend"] == "native":
        from tfnas.deploy import quantize  # pylint: disable=import-outside-toplevel

        _, history, _ = quantize.train_and_convert(
            model, prepared.batches("full_train", True), path,
            workdir=run.file("checkpoints"), **common)
    else:
        try:
            from tfnas.deploy import qat  # pylint: disable=import-outside-toplevel
        except ImportError as err:
            raise ExportError(f"tflite_int8_qat with export.qat_backend 'tfmot': {err}; or "
                              "use export.qat_backend 'native'.") from None
        if not os.path.exists(run.file("architecture.json")):
            raise ExportError("tflite_int8_qat with the tfmot backend rebuilds the model from "
                              "its architecture document; pass --architecture PATH to tfnas "
                              "export.")
        _, history, _ = qat.train_and_convert(
            Architecture.load(run.file("architecture.json")), model,
            prepared.batches("full_train", True), path, **common)
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
    arch, searched = search(config, run, verbose=verbose, prepared=prepared)
    model, trained = train(config, run, arch, searched=searched, verbose=verbose,
                           prepared=prepared)
    if run.stage_done("export"):
        print(f"Resuming {run.path}: the export is complete, loading it.")
        exported = run.read_json("summary.json")["exports"]
    else:
        exported = export(config, run, model, verbose=False, prepared=prepared,
                          fit_verbose=verbose)
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
