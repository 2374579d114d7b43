"""The `tfnas` command line.

    tfnas search --config configs/quickstart.json --run_dir runs/qs
    tfnas train  --architecture runs/qs/architecture.json --run_dir runs/qs-train \
                 [--inherit_from runs/qs]
    tfnas export --model runs/qs-train/models/model.keras --run_dir runs/qs-export
    tfnas run    --config configs/quickstart.json [--set search.epochs=2 ...]
    tfnas benchmark --model runs/qs/models/model_int8.tflite [--threads 1]
                 [--android_binary benchmark_model --serial SERIAL --use_gpu --op_profile]
    tfnas report --runs runs/qs,runs/other --run_dir runs/compare
    tfnas latency-table --config configs/grunas_cifar10.json --tflite_mode int8 \
                 [--android_binary benchmark_model --serial SERIAL]

Every command writes into its own `--run_dir` (default `runs/<name>-<time>`) and
refuses an existing one unless `--resume` or `--overwrite` is given.
"""

import json
import os
import sys
import time

from absl import app, flags

COMMANDS = ("search", "train", "export", "run", "benchmark", "report", "latency-table")

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "JSON recipe (see configs/).")
flags.DEFINE_multi_string("set", [], "Override a config value: key.path=value (JSON value).")
flags.DEFINE_string("run_dir", None, "Directory of this run (default runs/<name>-<time>).")
flags.DEFINE_bool("overwrite", False, "Delete an existing run directory first.")
flags.DEFINE_bool("resume", False, "Continue the run in --run_dir from its checkpoints.")
flags.DEFINE_string("architecture", None,
                    "Architecture JSON document (train; export, for tflite_int8_qat).")
flags.DEFINE_string("inherit_from", None,
                    "Search run directory whose supernet weights `train` inherits.")
flags.DEFINE_string("model", None, "A .keras model to export (export).")
flags.DEFINE_integer("verbose", 2, "Keras fit verbosity (0, 1 or 2).")
flags.DEFINE_integer("threads", 1, "benchmark: CPU threads.")
flags.DEFINE_integer("num_runs", 100, "benchmark: timed runs.")
flags.DEFINE_integer("warmup_runs", 10, "benchmark: untimed runs first.")
flags.DEFINE_string("android_binary", None,
                    "benchmark: run on a phone over adb with this benchmark_model binary.")
flags.DEFINE_string("serial", None, "benchmark: adb device serial.")
flags.DEFINE_string("adb", "adb", "benchmark: the adb executable.")
flags.DEFINE_bool("use_gpu", False, "benchmark (Android): GPU delegate.")
flags.DEFINE_bool("use_xnnpack", True, "benchmark (Android): XNNPACK delegate.")
flags.DEFINE_bool("op_profile", False, "benchmark (Android): pull a per-op profile CSV.")
flags.DEFINE_list("runs", [], "report: run directories to compare (comma-separated).")
flags.DEFINE_enum("tflite_mode", "float32", ["float32", "float16", "dynamic", "int8"],
                  "latency-table: the TFLite mode to time.")
flags.DEFINE_integer("repeats", 3, "latency-table: timings of each op, interleaved.")
flags.DEFINE_integer("calibrate", 0,
                     "latency-table: fit the table's scale on this many whole networks.")


def _usage():
    return (f"usage: tfnas {{{'|'.join(COMMANDS)}}} [flags]; see `tfnas --helpfull` and "
            "the README.")


def _config(run_dir_exists_for_resume):
    from tfnas.config import load_config  # pylint: disable=import-outside-toplevel

    if FLAGS.resume and run_dir_exists_for_resume and not FLAGS.config and not FLAGS.set:
        return load_config(os.path.join(FLAGS.run_dir, "config.json"))
    return load_config(FLAGS.config, FLAGS.set)


def _run_directory(config, command):
    from tfnas.run_dir import RunDirectory  # pylint: disable=import-outside-toplevel

    path = FLAGS.run_dir or os.path.join(
        "runs", f"{config['name']}-{command}-{time.strftime('%Y%m%d-%H%M%S')}")
    run = RunDirectory(path, overwrite=FLAGS.overwrite, resume=FLAGS.resume)
    run.save_config(config)
    return run


def main(argv):
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(_usage())
    from absl import logging  # pylint: disable=import-outside-toplevel

    from tfnas.errors import USER_ERRORS  # pylint: disable=import-outside-toplevel

    logging.set_verbosity(logging.WARNING)

    try:
        return _main(argv[1])
    except USER_ERRORS as err:
        print(f"tfnas {argv[1]}: error: {err}", file=sys.stderr)
        return 2


def _main(command):
    from tfnas import pipeline  # pylint: disable=import-outside-toplevel
    from tfnas.architecture import Architecture  # pylint: disable=import-outside-toplevel

    resuming = bool(FLAGS.resume and FLAGS.run_dir
                    and os.path.exists(os.path.join(FLAGS.run_dir, "config.json")))
    config = _config(resuming)
    if command == "train" and not FLAGS.architecture:
        raise app.UsageError("tfnas train needs --architecture PATH.")
    if command == "export" and not FLAGS.model:
        raise app.UsageError("tfnas export needs --model PATH.keras.")
    if command == "benchmark" and not FLAGS.model:
        raise app.UsageError("tfnas benchmark needs --model PATH.tflite.")
    if command == "report" and not FLAGS.runs:
        raise app.UsageError("tfnas report needs --runs DIR[,DIR...].")
    architecture = Architecture.load(FLAGS.architecture) if FLAGS.architecture else None
    run = _run_directory(config, command)
    print(f"tfnas {command}: writing to {run.path}")

    if command == "search":
        arch, _ = pipeline.search(config, run, verbose=FLAGS.verbose)
        print(f"architecture: {arch.choice_list()} ({arch.parameters:,} parameters) -> "
              f"{run.file('architecture.json')}")
    elif command == "train":
        if FLAGS.inherit_from and not config["train"]["inherit"]:
            raise app.UsageError("--inherit_from given but train.inherit is false.")
        supernet = (pipeline.load_supernet(FLAGS.inherit_from, config)
                    if FLAGS.inherit_from else None)
        architecture.save(run.file("architecture.json"), overwrite=True)
        _, result = pipeline.train(config, run, architecture, supernet=supernet,
                                   verbose=FLAGS.verbose)
        run.write_json("summary.json", result)
        print(f"test accuracy {result['test_accuracy']:.4f} -> {result['keras_model']}")
    elif command == "export":
        import keras  # pylint: disable=import-outside-toplevel

        import tfnas.layers  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

        if not os.path.exists(FLAGS.model):
            raise app.UsageError(f"--model {FLAGS.model} does not exist.")
        model = keras.saving.load_model(FLAGS.model)
        if architecture is not None:
            architecture.save(run.file("architecture.json"), overwrite=True)
        run.write_json("summary.json", pipeline.export(config, run, model))
    elif command == "benchmark":
        result = _benchmark(run)
        run.write_json("benchmark.json", result)
        print(json.dumps(result))
    elif command == "report":
        from tfnas.deploy.report import rows_from_summary, write_report  # pylint: disable=import-outside-toplevel

        rows = []
        for path in FLAGS.runs:
            summary_path = os.path.join(path, "summary.json")
            if not os.path.exists(summary_path):
                raise app.UsageError(f"{path} has no summary.json (run `tfnas run` first).")
            with open(summary_path, encoding="utf-8") as f:
                rows += rows_from_summary(json.load(f))
        print(f"report: {write_report(rows, run.path)}")
    elif command == "latency-table":
        from tfnas.deploy import latency  # pylint: disable=import-outside-toplevel

        space = pipeline.space_for(config)
        table = latency.build_table(space, mode=FLAGS.tflite_mode, num_threads=FLAGS.threads,
                                    num_runs=FLAGS.num_runs, warmup_runs=FLAGS.warmup_runs,
                                    repeats=FLAGS.repeats, benchmark=_android_timer(),
                                    workdir=run.file("checkpoints"))
        if FLAGS.calibrate:
            table = latency.calibrate_table(table, space, num_networks=FLAGS.calibrate,
                                            benchmark=_android_timer(),
                                            workdir=run.file("checkpoints"))
        if FLAGS.android_binary:
            table["device"] = f"android:{FLAGS.serial or 'default'}"
        path = latency.save_table(table, run.file("latency_table.json"))
        print(f"latency table: {len(table['entries'])} ops -> {path}")
    else:
        summary = pipeline.run_all(config, run, verbose=FLAGS.verbose)
        print(pipeline.format_summary(summary))
    return 0


def _android_timer():
    if not FLAGS.android_binary:
        return None
    from tfnas.deploy.android import AndroidBenchmark  # pylint: disable=import-outside-toplevel

    bench = AndroidBenchmark(FLAGS.android_binary, serial=FLAGS.serial, adb=FLAGS.adb)
    return lambda path: bench.run(path, num_threads=FLAGS.threads, use_gpu=FLAGS.use_gpu,
                                  use_xnnpack=FLAGS.use_xnnpack, num_runs=FLAGS.num_runs,
                                  warmup_runs=FLAGS.warmup_runs)


def _benchmark(run):
    if FLAGS.android_binary:
        from tfnas.deploy.android import AndroidBenchmark  # pylint: disable=import-outside-toplevel

        bench = AndroidBenchmark(FLAGS.android_binary, serial=FLAGS.serial, adb=FLAGS.adb)
        profile = run.file("op_profile.csv") if FLAGS.op_profile else None
        return bench.run(FLAGS.model, num_threads=FLAGS.threads, use_gpu=FLAGS.use_gpu,
                         use_xnnpack=FLAGS.use_xnnpack, enable_op_profiling=FLAGS.op_profile,
                         num_runs=FLAGS.num_runs, warmup_runs=FLAGS.warmup_runs,
                         profile_out=profile)
    from tfnas.deploy.benchmark import benchmark_host  # pylint: disable=import-outside-toplevel

    return benchmark_host(FLAGS.model, num_threads=FLAGS.threads,
                          warmup_runs=FLAGS.warmup_runs, num_runs=FLAGS.num_runs)


def run_main():
    """Console-script entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        app.run(main)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    run_main()
