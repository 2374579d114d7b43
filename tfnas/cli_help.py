"""`tfnas --help` and `tfnas <command> --help`: what each command does and reads.

absl's own `--help` lists every flag of every command (and absl's) at once; a user asking
about `tfnas race` wants race's flags and an example. Each command's entry names the flags
it reads; their text and defaults come from the flag definitions in `tfnas.cli`, so the
help cannot drift from what the flags are. `--helpfull` stays absl's.
"""

import re
import textwrap

# Flags every command that writes a run directory reads.
_RUN = ("run_dir", "overwrite", "resume", "verbose", "tf_logs")
_RECIPE = ("config", "set")

# command: (one line, the flags it reads, examples)
COMMANDS = {
    "search": ("Search an architecture; writes architecture.json.",
               _RECIPE + ("strategy",) + _RUN,
               ("tfnas search --config configs/quickstart.json --run_dir runs/qs",)),
    "train": ("Train an architecture document from scratch or from a search's weights.",
              _RECIPE + ("architecture", "architecture_space", "inherit_from", "strategy")
              + _RUN,
              ("tfnas train --config configs/quickstart.json --architecture "
               "runs/qs/architecture.json --inherit_from runs/qs --run_dir runs/qs-train",)),
    "export": ("Export a trained .keras model: SavedModel, TFLite float32 / int8 / QAT.",
               _RECIPE + ("model", "architecture", "architecture_space") + _RUN,
               ("tfnas export --config configs/quickstart.json --model "
                "runs/qs-train/models/model.keras --run_dir runs/qs-export",)),
    "run": ("Search, train, export and benchmark in one run directory.",
            _RECIPE + ("strategy",) + _RUN,
            ("tfnas run --config configs/quickstart.json",
             "tfnas run --config configs/quickstart.json --set search.epochs=2")),
    "benchmark": ("Time a .tflite model on this machine, or on a phone over adb.",
                  ("model", "threads", "num_runs", "warmup_runs", "android_binary", "serial",
                   "adb", "use_gpu", "use_xnnpack", "op_profile", "run_dir", "overwrite",
                   "tf_logs"),
                  ("tfnas benchmark --model runs/qs/models/model_int8.tflite --threads 1",
                   "tfnas benchmark --model m.tflite --android_binary "
                   "/data/local/tmp/benchmark_model --serial SERIAL")),
    "report": ("Compare finished runs: a table of accuracy, size and latency.",
               ("runs", "run_dir", "overwrite", "tf_logs"),
               ("tfnas report --runs runs/qs,runs/other --run_dir runs/compare",)),
    "latency-table": ("Time every op of a space once, for latency-constrained searches.",
                      _RECIPE + ("tflite_mode", "threads", "num_runs", "warmup_runs", "repeats",
                                 "calibrate", "android_binary", "serial", "adb", "use_gpu",
                                 "use_xnnpack") + _RUN,
                      ("tfnas latency-table --config configs/grunas_cifar10.json "
                       "--tflite_mode int8",)),
    "budget-graph": ("Sweep DCA-NAS search bounds and read the bound that meets a budget.",
                     _RECIPE + ("bounds", "budget") + _RUN,
                     ("tfnas budget-graph --config configs/nasbench201_dca_cpu.json "
                      "--bounds 20000,30000,40000",)),
    "race": ("Race keras-tuner oracles over an accuracy table (a tabular benchmark).",
             ("table", "oracles", "trials", "seeds", "out", "warm_start",
              "warm_start_candidates", "warm_start_trials", "warm_start_mutations", "tf_logs"),
             ("tfnas race --table tfnas/data/nasbench201_3ops_table.csv "
              "--oracles random,evolution,enas --trials 150 --seeds 20 --out runs/race",
              "tfnas race --table T.csv --warm_start jacob_cov --warm_start_candidates 50")),
}
ALIASES = {"benchmark-search": "race"}
HELP_ARGS = ("--help", "-h", "-?", "--helpshort")


def wants_help(args):
    """True when the command line asks for help (absl's `--helpfull` is left to absl)."""
    return any(a in HELP_ARGS for a in args)


def help_text(args, flag_values):
    """`(text, known)`: the help for `tfnas <args>`, one command's or the list of commands;
    `known` is False when `args` name a command tfnas does not have."""
    words = [a for a in args if not a.startswith("-")]
    command = ALIASES.get(words[0], words[0]) if words else None
    if command not in COMMANDS:
        return (_overview(f"tfnas: unknown command {words[0]!r}.\n\n" if words else ""),
                not words)
    line, names, examples = COMMANDS[command]
    alias = [a for a, c in ALIASES.items() if c == command]
    text = [f"tfnas {command}: {line}" + (f" (also: tfnas {', '.join(alias)})" if alias else ""),
            "", "Examples:", *(f"  {e}" for e in examples), "", "Flags:"]
    for name in names:
        flag = flag_values[name]
        text.append(f"  --{name}" + ("" if flag.default in (None, []) else
                                     f" (default: {_shown(flag.default)})"))
        # The flags' texts start with the commands that read them ("race: ..."); here the
        # command is known.
        text.extend(textwrap.wrap(re.sub(r"^[\w/-]+: ", "", flag.help), 92,
                                  initial_indent="      ", subsequent_indent="      "))
    text += ["", "Every flag of every command: tfnas --helpfull."]
    return "\n".join(text), True


def _shown(value):
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _overview(prefix=""):
    width = max(len(c) for c in COMMANDS)
    lines = [f"  {c.ljust(width)}  {line}" for c, (line, _, _) in COMMANDS.items()]
    return (f"{prefix}usage: tfnas <command> [flags]\n\nCommands:\n" + "\n".join(lines)
            + "\n\n`tfnas <command> --help` lists a command's flags, with examples; "
            "docs/cli.md is the reference.")
