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
    tfnas budget-graph --config configs/nasbench201_dca_cpu.json \
                 [--bounds 20000,30000,40000] [--budget 30000]

Every command writes into its own `--run_dir` (default `runs/<name>-<command>-<time>`)
and refuses an existing one unless `--resume` or `--overwrite` is given;
`--overwrite` deletes only a directory that tfnas created, and never one that
holds an input of the command. Every input is read and checked before anything
is written. Bad input is one line on stderr and exit status 2.
"""

import json
import os
import shutil
import sys
import time
import zipfile

from absl import app, flags

from tfnas import cli_help
from tfnas.errors import TfnasError, UsageError

# Other names of commands: `benchmark-search` is what the search-quality issue called `race`.
ALIASES = cli_help.ALIASES
COMMANDS = (*cli_help.COMMANDS, *ALIASES)
# Commands whose work is a stage that a resumed run reuses once it has finished.
STAGES = {"search": "search", "train": "train", "export": "export", "run": "run"}

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "JSON recipe (see configs/).")
flags.DEFINE_multi_string("set", [], "Override a config value: key.path=value (JSON value).")
flags.DEFINE_string("run_dir", None, "Directory of this run (default runs/<name>-<time>).")
flags.DEFINE_bool("overwrite", False,
                  "Delete an existing run directory first (only one that tfnas created).")
flags.DEFINE_bool("resume", False, "Continue the run in --run_dir from its checkpoints.")
flags.DEFINE_enum("strategy", None, ["none", "mirrored", "multi_worker"],
                  "tf.distribute strategy (sets distribute.strategy): mirrored = this "
                  "machine's GPUs, multi_worker = the machines of TF_CONFIG.")
flags.DEFINE_string("architecture", None,
                    "Architecture JSON document (train; export, for tflite_int8_qat).")
flags.DEFINE_bool("architecture_space", False,
                  "train/export: take the space and its configuration from --architecture "
                  "instead of the recipe's (recorded in the run's config.json).")
flags.DEFINE_string("inherit_from", None,
                    "Search run directory whose learned weights `train` starts from.")
flags.DEFINE_string("model", None, "The model: a .keras file to export (export), a .tflite "
                    "file to time (benchmark).")
flags.DEFINE_integer("verbose", None,
                     "Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch "
                     "(default: 1 on a terminal, else 2).")
flags.DEFINE_bool("tf_logs", False,
                  "Show TensorFlow's own log lines (C++ logs, converter, warnings); hidden "
                  "by default.")
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
flags.DEFINE_list("bounds", [],
                  "budget-graph: the search bounds K' to sweep, in the cost's unit "
                  "(default: the budget times 0.6, 0.8, 1.0, 1.2, 1.4).")
flags.DEFINE_float("budget", None,
                   "budget-graph: the budget K to read the bound for (default: the recipe's "
                   "search.penalty.budget).")


flags.DEFINE_string("table", None, "race: a CSV accuracy table (decision columns, then "
                    "'accuracy'); default the shipped tfnas/data/grunas_tiny_table.csv.")
flags.DEFINE_list("oracles", ["random", "evolution", "enas"],
                  "race: oracles to race (random, evolution, enas, enas_released, bayesian).")
flags.DEFINE_integer("trials", 200, "race: trials per run.")
flags.DEFINE_integer("seeds", 10, "race: runs per oracle, seeds 0..N-1.")
flags.DEFINE_string("out", None, "race: a new directory for runs.csv, summary.json and "
                    "best_so_far.png.")
flags.DEFINE_list("warm_start", None,
                  "race: the table's proxy columns (after 'accuracy') to warm-start every "
                  "oracle from, as the tuner method's search.warm_start does; several vote.")
flags.DEFINE_integer("warm_start_candidates", 500,
                     "race: architectures drawn and ranked by --warm_start per run.")
flags.DEFINE_integer("warm_start_trials", 10,
                     "race: how many of the best-ranked the first trials take.")
flags.DEFINE_integer("warm_start_mutations", 1,
                     "race: evolution ranks this many children of each tournament's winner "
                     "by --warm_start and trains the best (1: it does not rank them).")


def _usage():
    return (f"usage: tfnas {{{'|'.join(COMMANDS)}}} [flags]; see `tfnas --help`, "
            "`tfnas <command> --help` and the documentation (docs/cli.md).")


# How many more times this process may restart itself to rejoin its multi-worker cluster
# (distribute.rejoin); None outside a multi-worker run.
_REJOINS_LEFT = None
_REJOINED = "TFNAS_REJOINED"  # restarts so far, passed to the restarted process


def main(argv):
    command = argv[1] if len(argv) == 2 else None
    try:
        if command not in COMMANDS:
            raise UsageError(_usage() if len(argv) < 3 else
                             f"unexpected arguments {argv[2:]}; {_usage()}")
        _quiet_tensorflow(FLAGS.tf_logs)
        command = ALIASES.get(command, command)
        if command == "race":
            return _race()
        return _main(command)
    except TfnasError as err:
        reason = _rejoin_reason(err)
        if reason is not None:
            return _rejoin(command, err, reason)
        print(f"{' '.join(['tfnas', command] if command else ['tfnas'])}: error: {err}",
              file=sys.stderr)
        return 2
    except Exception as err:  # pylint: disable=broad-except
        reason = _rejoin_reason(err)
        if reason is None:
            raise
        return _rejoin(command, err, reason)


def _rejoin_reason(err):
    """Why this process of a multi-worker run should start again, or None."""
    if _REJOINS_LEFT is None:  # before TensorFlow is imported: a usage error prints one line
        return None
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from tfnas.distribute import PortInUseError  # pylint: disable=import-outside-toplevel

    # Unavailable: the peer is gone; Aborted: it came back as a new process already.
    if isinstance(err, (tf.errors.UnavailableError, tf.errors.AbortedError)):
        return "a peer of the cluster stopped"
    # A restarted process whose port the system has not freed yet (seen once on CI).
    if isinstance(err, PortInUseError) and os.environ.get(_REJOINED):
        time.sleep(5)
        return "this process's port was not free yet"
    return None


def _rejoin(command, err, reason):
    """TensorFlow aborted this multi-worker process's collectives because a peer stopped;
    its runtime cannot take the peer back, so the process starts itself again with
    `--resume` and waits in the new cluster for the peer's restart: only the lost process
    needs to be restarted, and all continue from the last epoch backup."""
    done = int(os.environ.get(_REJOINED, "0"))
    first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
    if _REJOINS_LEFT <= 0:
        print(f"tfnas {command}: error: {reason} ({first_line}) and this process has "
              f"rejoined {done} times (distribute.rejoin); restart every process with "
              "--resume.", file=sys.stderr)
        return 1
    print(f"tfnas {command}: {reason}; restarting this process to wait for it and resume "
          f"from the last backup (rejoin {done + 1} of {done + _REJOINS_LEFT}).", flush=True)
    sys.stderr.flush()
    # --overwrite would delete the run being resumed.
    args = [a for a in sys.argv[1:] if a.split("=")[0] not in
            ("--overwrite", "--nooverwrite", "--resume", "--noresume")]
    os.execve(sys.executable, [sys.executable, "-m", "tfnas.cli", *args, "--resume"],
              {**os.environ, _REJOINED: str(done + 1)})
    return 1  # not reached


def _quiet_tensorflow(show):
    """TensorFlow's C++ and Python logs stay out of the output unless --tf_logs."""
    from tfnas import quiet  # pylint: disable=import-outside-toplevel

    if show:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    quiet.enable()
    import warnings  # pylint: disable=import-outside-toplevel

    warnings.filterwarnings("ignore")
    with quiet.native_output():
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        import keras  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

    from absl import logging  # pylint: disable=import-outside-toplevel

    logging.set_verbosity(logging.ERROR)
    tf.get_logger().setLevel("ERROR")
    tf.autograph.set_verbosity(0)


def _fit_verbosity():
    if FLAGS.verbose is not None:
        if FLAGS.verbose not in (0, 1, 2):
            raise UsageError(f"--verbose is 0, 1 or 2, got {FLAGS.verbose}.")
        return FLAGS.verbose
    return 1 if sys.stdout.isatty() else 2


def _check_flags(command):
    needs = {"train": ("architecture", "--architecture PATH"),
             "export": ("model", "--model PATH.keras"),
             "benchmark": ("model", "--model PATH.tflite"),
             "report": ("runs", "--runs DIR[,DIR...]")}
    if command in needs and not getattr(FLAGS, needs[command][0]):
        raise UsageError(f"tfnas {command} needs {needs[command][1]}.")
    if FLAGS.resume and FLAGS.overwrite:
        raise UsageError("Choose one of --resume (continue the run) and --overwrite (delete "
                         "it and start again), not both.")
    if FLAGS.resume:
        if not FLAGS.run_dir:
            raise UsageError("--resume needs --run_dir: the run to continue.")
        if not os.path.exists(os.path.join(FLAGS.run_dir, "config.json")):
            raise UsageError(f"Cannot resume {FLAGS.run_dir}: "
                             + ("it does not exist" if not os.path.exists(FLAGS.run_dir)
                                else "it is not a tfnas run (no config.json)")
                             + ". Check --run_dir, or start a new run without --resume.")
    if FLAGS.inherit_from and command != "train":
        raise UsageError("--inherit_from is a flag of tfnas train.")


def _config():
    from tfnas.config import load_config  # pylint: disable=import-outside-toplevel

    strategy = [] if FLAGS.strategy is None else [
        f"distribute.strategy={'null' if FLAGS.strategy == 'none' else FLAGS.strategy}"]
    if FLAGS.resume and not FLAGS.config and not FLAGS.set:
        return load_config(os.path.join(FLAGS.run_dir, "config.json"), strategy)
    return load_config(FLAGS.config, FLAGS.set + strategy)


def _with_space_of(config, architecture):
    """`config` with the architecture document's space and configuration (the data's
    classes and input shape stay the data's: they are checked against it)."""
    from tfnas.config import validate  # pylint: disable=import-outside-toplevel

    space_config = {k: v for k, v in architecture.space_config.items()
                    if k not in ("num_classes", "input_shape")}
    return validate({**config, "space": {"name": architecture.space, "config": space_config}})


def _run_path(config, command):
    """The run directory; a multi-worker cluster's workers other than the chief write
    theirs beside the chief's (`<run_dir>.worker-<index>`), deleted when they finish."""
    from tfnas import distribute  # pylint: disable=import-outside-toplevel
    from tfnas.run_dir import default_path  # pylint: disable=import-outside-toplevel

    if config["distribute"]["strategy"] != "multi_worker":
        return FLAGS.run_dir or default_path(config["name"], command), False
    if distribute.is_chief():
        return FLAGS.run_dir, False
    path = f"{FLAGS.run_dir.rstrip(os.sep)}.worker-{distribute.task_index()}"
    if FLAGS.resume:
        # Every worker continues from the chief's backup (its run directory must be on a
        # filesystem the workers share, as for Keras's BackupAndRestore): the worker's own
        # directory restarts as a copy of the chief's.
        from tfnas.run_dir import remove_run  # pylint: disable=import-outside-toplevel

        remove_run(path)
        if os.path.isdir(FLAGS.run_dir):
            shutil.copytree(FLAGS.run_dir, path, ignore=shutil.ignore_patterns("*.tmp"))
    return path, True


def _load_keras_model(path):
    from tfnas.deploy import ExportError  # pylint: disable=import-outside-toplevel

    if not os.path.exists(path):
        raise ExportError(f"--model {path} does not exist.")
    if os.path.isdir(path) or not path.endswith(".keras"):
        raise ExportError(f"--model {path} is not a .keras file; tfnas export takes the "
                          "models/model.keras that tfnas train writes.")
    if not zipfile.is_zipfile(path):
        raise ExportError(f"--model {path} is not a Keras model file (a .keras file is a zip "
                          "archive; this one is damaged or truncated).")
    import keras  # pylint: disable=import-outside-toplevel

    import tfnas.layers  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

    try:
        return keras.saving.load_model(path)
    except Exception as err:  # pylint: disable=broad-except
        raise ExportError(f"Cannot load --model {path}: {type(err).__name__}: "
                          f"{' '.join(str(err).split())[:300]}") from None


def _read_summaries(paths):
    from tfnas.deploy.report import rows_from_summary  # pylint: disable=import-outside-toplevel
    from tfnas.run_dir import RunDirectoryError  # pylint: disable=import-outside-toplevel

    rows = []
    for path in paths:
        summary_path = os.path.join(path, "summary.json")
        if not os.path.exists(summary_path):
            raise RunDirectoryError(f"{path} has no summary.json (run `tfnas run` first).")
        try:
            with open(summary_path, encoding="utf-8") as f:
                rows += rows_from_summary(json.load(f))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise RunDirectoryError(
                f"{summary_path} is not a tfnas run summary ({type(err).__name__}: {err}); "
                "it was edited or damaged. Run the run again, or leave it out of --runs.") \
                from None
    return rows


def _race():
    """`tfnas race`: oracles raced over an accuracy table (`tfnas.race`)."""
    from tfnas import race  # pylint: disable=import-outside-toplevel

    if FLAGS.trials < 1 or FLAGS.seeds < 1:
        raise UsageError(f"--trials and --seeds are at least 1, got {FLAGS.trials} and "
                         f"{FLAGS.seeds}.")
    unknown = sorted(set(FLAGS.oracles) - set(race.ORACLES))
    if unknown or not FLAGS.oracles:
        raise UsageError(f"--oracles takes some of {list(race.ORACLES)}, got {FLAGS.oracles}.")
    if FLAGS.out and os.path.exists(FLAGS.out):
        raise UsageError(f"--out {FLAGS.out} exists; name a new directory (nothing there is "
                         "overwritten).")
    counts = (FLAGS.warm_start_candidates, FLAGS.warm_start_trials, FLAGS.warm_start_mutations)
    if min(counts) < 1:
        raise UsageError("--warm_start_candidates, --warm_start_trials and "
                         f"--warm_start_mutations are at least 1, got {counts}.")
    warm_start = None
    if FLAGS.warm_start:
        warm_start = {"proxy": FLAGS.warm_start, "candidates": FLAGS.warm_start_candidates,
                      "trials": FLAGS.warm_start_trials,
                      "mutations": FLAGS.warm_start_mutations}
    try:
        race.race(FLAGS.table or race.TINY_TABLE, FLAGS.oracles, FLAGS.trials, FLAGS.seeds,
                  FLAGS.out, warm_start=warm_start)
    except race.TableError as err:
        raise UsageError(str(err)) from None
    if FLAGS.out:
        print(f"runs.csv, summary.json and best_so_far.png are in {FLAGS.out}")
    return 0


def _main(command):
    from tfnas.run_dir import RunDirectory  # pylint: disable=import-outside-toplevel

    _check_flags(command)
    config = _config()
    if config["distribute"]["strategy"] == "multi_worker":
        if not FLAGS.run_dir:
            # Before the strategy is made: every worker of the cluster must name the same run.
            raise UsageError("distribute.strategy 'multi_worker' needs --run_dir: every worker "
                             "of the cluster names the same run.")
        global _REJOINS_LEFT  # pylint: disable=global-statement
        _REJOINS_LEFT = config["distribute"]["rejoin"] - int(os.environ.get(_REJOINED, "0"))
    verbose = _fit_verbosity()
    # Every input is read and checked before the run directory is touched.
    from tfnas.config import input_paths  # pylint: disable=import-outside-toplevel

    inputs = [FLAGS.config, FLAGS.architecture, FLAGS.inherit_from, FLAGS.model, *FLAGS.runs,
              *input_paths(config)]
    architecture = model = rows = prepared = None
    if FLAGS.architecture:
        from tfnas.architecture import Architecture  # pylint: disable=import-outside-toplevel

        architecture = Architecture.load(FLAGS.architecture)
        if FLAGS.architecture_space:
            config = _with_space_of(config, architecture)
    elif FLAGS.architecture_space:
        raise UsageError("--architecture_space takes the space of --architecture; give both.")
    phone = _android() if command in ("benchmark", "latency-table") else None
    if command == "export":
        model = _load_keras_model(FLAGS.model)
    if command == "benchmark" and not os.path.isfile(FLAGS.model):
        from tfnas.deploy import ExportError  # pylint: disable=import-outside-toplevel

        raise ExportError(f"No TFLite model at {FLAGS.model}.")
    if command == "report":
        rows = _read_summaries(FLAGS.runs)
    checked = config
    if command == "budget-graph":
        from tfnas import budget_graph  # pylint: disable=import-outside-toplevel

        graph_budget, graph_bounds = _budget_graph_inputs(config)
        # The sweep's searches run at a fixed bound without the recipe's tolerance: checked
        # as they run.
        checked = budget_graph.grid_config(config, graph_budget)
    if command in ("search", "train", "export", "run", "latency-table", "budget-graph"):
        from tfnas import pipeline  # pylint: disable=import-outside-toplevel

        prepared = pipeline.prepare(checked)
        if architecture is not None:
            pipeline.check_architecture(architecture, prepared)
    searched = None
    if command == "train" and FLAGS.inherit_from:
        if not config["train"]["inherit"]:
            raise UsageError("--inherit_from given but train.inherit is false.")
        searched = pipeline.load_search(FLAGS.inherit_from, config, prepared)

    run_path, worker = _run_path(config, command)
    run = RunDirectory(run_path, overwrite=FLAGS.overwrite,
                       resume=FLAGS.resume and (not worker or os.path.isdir(run_path)),
                       inputs=[p for p in inputs if p])
    run.save_config(config)
    print(f"tfnas {command}: writing to {run.path}")
    if command == "search":
        arch, _ = pipeline.search(config, run, verbose=verbose, prepared=prepared)
        print(f"architecture: {arch.choice_list()} ({arch.parameters:,} parameters) -> "
              f"{run.file('architecture.json')}")
    elif command == "train":
        if not os.path.exists(run.file("architecture.json")):
            architecture.save(run.file("architecture.json"))
        _, result = pipeline.train(config, run, architecture, searched=searched,
                                   verbose=verbose, prepared=prepared)
        run.write_json("summary.json", result)
        print(f"test accuracy {result['test_accuracy']:.4f} -> {result['keras_model']}")
    elif command == "export":
        if run.stage_done("export"):
            print(f"Resuming {run.path}: the export is complete.")
            return 0
        if architecture is not None and not os.path.exists(run.file("architecture.json")):
            architecture.save(run.file("architecture.json"))
        run.write_json("summary.json", pipeline.export(config, run, model, prepared=prepared,
                                                       fit_verbose=verbose))
        run.finish_stage("export")
    elif command == "benchmark":
        result = _benchmark(run, phone)
        run.write_json("benchmark.json", result)
        print(json.dumps(result))
    elif command == "report":
        from tfnas.deploy.report import write_report  # pylint: disable=import-outside-toplevel

        print(f"report: {write_report(rows, run.path)}")
    elif command == "latency-table":
        from tfnas.deploy import latency  # pylint: disable=import-outside-toplevel

        space = prepared.space
        table = latency.build_table(space, mode=FLAGS.tflite_mode, num_threads=FLAGS.threads,
                                    num_runs=FLAGS.num_runs, warmup_runs=FLAGS.warmup_runs,
                                    repeats=FLAGS.repeats, benchmark=_android_timer(phone),
                                    workdir=run.file("checkpoints"))
        if FLAGS.calibrate:
            table = latency.calibrate_table(table, space, num_networks=FLAGS.calibrate,
                                            benchmark=_android_timer(phone),
                                            workdir=run.file("checkpoints"))
        if FLAGS.android_binary:
            table["device"] = f"android:{FLAGS.serial or 'default'}"
        path = latency.save_table(table, run.file("latency_table.json"))
        print(f"latency table: {len(table['entries'])} ops -> {path}")
    elif command == "budget-graph":
        _budget_graph(config, run, graph_budget, graph_bounds, verbose)
    else:
        summary = pipeline.run_all(config, run, verbose=verbose, prepared=prepared)
        print(pipeline.format_summary(summary))
    if worker:  # the chief's directory holds the run
        run.remove()
    return 0


def _budget_graph_inputs(config):
    from tfnas import budget_graph  # pylint: disable=import-outside-toplevel

    budget = budget_graph.check_sweepable(config) if FLAGS.budget is None else FLAGS.budget
    try:
        bounds = [float(b) for b in FLAGS.bounds]
    except ValueError:
        raise UsageError(f"--bounds takes numbers separated by commas, got "
                         f"{','.join(FLAGS.bounds)!r}.") from None
    bounds = bounds or [budget * f for f in (0.6, 0.8, 1.0, 1.2, 1.4)]
    if budget <= 0 or min(bounds) <= 0 or len(set(bounds)) < 2:
        raise UsageError(f"budget-graph needs a positive --budget and at least two different "
                         f"positive --bounds, got budget {budget:g}, bounds {bounds}.")
    return budget, sorted(set(bounds))


def _budget_graph(config, run, budget, bounds, verbose):
    from tfnas import budget_graph  # pylint: disable=import-outside-toplevel

    points = budget_graph.sweep(config, run, bounds, verbose=verbose)
    bound, inside = budget_graph.bound_for(points, budget)
    unit = points[0]["unit"]
    run.write_json("budget_graph.json", {"budget": budget, "unit": unit, "bound": bound,
                                         "budget_inside_graph": inside, "points": points})
    budget_graph.plot(points, budget, bound, unit, run.file("budget_graph.png"))
    for p in points:
        print(f"K' = {p['bound']:g}: derived network {p['derived_cost']:g} {unit}")
    if not inside:
        print(f"The budget {budget:g} is outside the graph: widen --bounds. The nearest end "
              f"is K' = {bound:g}.")
    print(f"For a budget of {budget:g} {unit}, search with K' = {bound:.6g}: "
          f"--set search.penalty.budget={budget:g} --set search.penalty.bound={bound:.6g} -> "
          f"{run.file('budget_graph.json')}")


def _android():
    """The phone benchmark of --android_binary, checked before anything is written."""
    if not FLAGS.android_binary:
        return None
    from tfnas.deploy.android import AndroidBenchmark  # pylint: disable=import-outside-toplevel

    return AndroidBenchmark(FLAGS.android_binary, serial=FLAGS.serial, adb=FLAGS.adb)


def _android_timer(phone):
    if phone is None:
        return None
    return lambda path: phone.run(path, num_threads=FLAGS.threads, use_gpu=FLAGS.use_gpu,
                                  use_xnnpack=FLAGS.use_xnnpack, num_runs=FLAGS.num_runs,
                                  warmup_runs=FLAGS.warmup_runs)


def _benchmark(run, phone):
    if phone is not None:
        profile = run.file("op_profile.csv") if FLAGS.op_profile else None
        return phone.run(FLAGS.model, num_threads=FLAGS.threads, use_gpu=FLAGS.use_gpu,
                         use_xnnpack=FLAGS.use_xnnpack, enable_op_profiling=FLAGS.op_profile,
                         num_runs=FLAGS.num_runs, warmup_runs=FLAGS.warmup_runs,
                         profile_out=profile)
    from tfnas.deploy.benchmark import benchmark_host  # pylint: disable=import-outside-toplevel

    return benchmark_host(FLAGS.model, num_threads=FLAGS.threads,
                          warmup_runs=FLAGS.warmup_runs, num_runs=FLAGS.num_runs)


def run_main():
    """Console-script entry point."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if cli_help.wants_help(sys.argv[1:]):
        text, known = cli_help.help_text(sys.argv[1:], FLAGS)
        try:
            print(text, file=sys.stdout if known else sys.stderr, flush=True)
        except BrokenPipeError:  # `tfnas race --help | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0 if known else 2)
    try:
        app.run(main)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    run_main()
