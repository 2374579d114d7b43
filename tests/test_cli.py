"""The command line, run as a user runs it: `tfnas ...` in a subprocess."""

import json
import os
import subprocess
import sys

import pytest

from conftest import cli_in_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.json")
PRESNET = os.path.join(ROOT, "configs", "presnet50_cpu_{}.json")
TINY = ["--set", "search.epochs=2", "--set", "search.warmup_epochs=1", "--set",
        "train.epochs=1", "--set", "data.limit=96", "--set", "data.batch_size=48", "--set",
        'space.config.widths=[[12,24],[24,24],[24,48]]']


def tfnas(*args, cwd=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "tfnas.cli", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, env=env, timeout=600, check=False)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "quick"
    result = tfnas("run", "--config", QUICKSTART, "--run_dir", str(run_dir), "--verbose=0",
                   *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def test_run_writes_everything_into_its_directory(finished_run):
    run_dir, result = finished_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(summary["choices"]) == 3 and summary["parameters"] > 0
    for path in ("config.json", "architecture.json", "models/model.keras",
                 "models/saved_model/saved_model.pb", "models/model_float32.tflite",
                 "logs/architecture.csv", "logs/architecture.png", "logs/search_history.csv",
                 "logs/train_history.csv", "checkpoints/supernet.weights.h5", "report.md",
                 "report.json", "accuracy_latency.png"):
        assert (run_dir / path).exists(), path
    for fmt in ("tflite_float32", "tflite_float16", "tflite_dynamic", "tflite_int8",
                "tflite_int8_qat"):
        assert 0.0 <= summary["exports"][fmt]["test_accuracy"] <= 1.0
        assert summary["exports"][fmt]["host_latency"]["median_ms"] > 0
        assert (run_dir / "models" / f"model_{fmt[7:]}.tflite").exists()
    assert "architecture (grunas)" in result.stdout and "trainable parameters" in result.stdout
    # Every export stage says when it starts: a slow one is not taken for a hang.
    for stage in ("saved_model: writing", "tflite_int8: converting",
                  "tflite_int8_qat: fake-quantizing (native), calibrating ranges, fine-tuning",
                  "tflite_int8_qat: testing on"):
        assert stage in result.stdout, stage
    assert summary["macs"] > summary["parameters"]
    assert "| tflite_int8 |" in (run_dir / "report.md").read_text()
    assert json.loads((run_dir / "config.json").read_text())["search"]["epochs"] == 2


def test_existing_run_directory_is_never_clobbered(finished_run, cli):
    run_dir, _ = finished_run
    before = (run_dir / "summary.json").stat().st_mtime_ns
    result = cli("run", "--config", QUICKSTART, "--run_dir", str(run_dir), *TINY)
    assert result.returncode == 2
    assert "already holds a run" in result.stderr and "--resume" in result.stderr
    assert (run_dir / "summary.json").stat().st_mtime_ns == before


def test_resume_of_a_finished_run_reuses_its_stages(finished_run, cli):
    run_dir, _ = finished_run
    arch = (run_dir / "architecture.json").read_text()
    result = cli("run", "--run_dir", str(run_dir), "--resume", "--verbose=0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the search is complete" in result.stdout
    assert "the training is complete" in result.stdout
    assert "the export is complete" in result.stdout
    assert (run_dir / "architecture.json").read_text() == arch


def test_train_and_export_commands(finished_run, tmp_path, cli):
    run_dir, _ = finished_run
    result = cli("train", "--config", QUICKSTART, *TINY, "--architecture",
                   str(run_dir / "architecture.json"), "--inherit_from", str(run_dir),
                   "--run_dir", str(tmp_path / "train"), "--verbose=0")
    assert result.returncode == 0, result.stderr[-3000:]
    model = tmp_path / "train" / "models" / "model.keras"
    assert model.exists()
    # Every format, quantization-aware int8 included, is exported by finished_run already.
    result = cli("export", "--config", QUICKSTART, *TINY, "--model", str(model),
                   "--run_dir", str(tmp_path / "export"), "--architecture",
                   str(run_dir / "architecture.json"), "--set", 'export.formats=["tflite_int8"]')
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "export" / "models" / "model_int8.tflite").exists()


def test_benchmark_and_report_commands(finished_run, tmp_path, cli):
    run_dir, _ = finished_run
    result = cli("benchmark", "--model", str(run_dir / "models" / "model_int8.tflite"),
                   "--num_runs", "20", "--run_dir", str(tmp_path / "bench"))
    assert result.returncode == 0, result.stderr[-3000:]
    bench = json.loads((tmp_path / "bench" / "benchmark.json").read_text())
    assert bench["num_runs"] == 20 and bench["median_ms"] > 0
    result = cli("report", "--runs", f"{run_dir},{run_dir}", "--run_dir",
                   str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr[-3000:]
    # 2 runs x (SavedModel + 5 TFLite)
    assert len(json.loads((tmp_path / "report" / "report.json").read_text())) == 2 * 6


ONE_BLOCK = ["--set", "space.config.widths=[[12,24]]", "--set", "space.config.candidates=[1,2]"]


def test_latency_table_command(tmp_path, cli):
    # One block of two candidates: stem, head, 2 units and the overhead (each entry is a
    # TFLite conversion, about 3 s).
    result = cli("latency-table", "--config", QUICKSTART, *ONE_BLOCK, "--num_runs", "10",
                 "--warmup_runs", "1", "--repeats", "1", "--run_dir", str(tmp_path / "lut"))
    assert result.returncode == 0, result.stderr[-3000:]
    table = json.loads((tmp_path / "lut" / "latency_table.json").read_text())
    assert table["format"] == "tfnas.latency_table" and len(table["entries"]) == 2 + 2 + 1


@pytest.mark.parametrize("args,message", [
    (["train", "--architecture", "/nonexistent.json"], "Cannot read architecture"),
    (["fly"], "usage: tfnas"),
    (["benchmark", "--model", "/nonexistent.tflite", "--android_binary", "/nonexistent"],
     "benchmark_model binary not found"),
])
def test_bad_input_is_a_clear_error(args, message, tmp_path):
    result = tfnas(*args, "--run_dir", str(tmp_path / "r"))
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # one line
    assert not (tmp_path / "r").exists()  # nothing written


def _write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


ARCH = {"format": "tfnas.architecture", "version": 1, "space": "grunas",
        "space_config": {"widths": [[12, 24], [24, 24], [24, 48]], "num_classes": 10},
        "choices": {"unit_1": 1, "unit_2": 2, "unit_3": 4}}


# Each of these gave a Python traceback before (issue: nothing lost, nothing silent).
@pytest.mark.parametrize("case, message", [
    ("config_list", "must be a JSON object of sections"),
    ("seed_text", "seed: 'abc' is not of type 'integer'"),
    ("beta_text", "The 'threshold' penalty takes finite numbers; got {'beta': 'abc'}"),
    ("limit_text", "data.limit: 'abc' is not of type 'integer', 'null'"),
    ("penalty_type", "Unknown penalty 'lagrange'"),
    ("optimizer_name", "search.optimizer: Unknown optimizer 'lamb'"),
    ("widths_bad", "widths"),
    ("num_classes", "space.config.num_classes is 100 but dataset 'bundled' has 10 classes"),
    ("input_shape", "space.config.input_shape is [64, 64, 3] but the data gives images of "
                    "shape [32, 32, 3]"),
    ("arch_probabilities", "'probabilities' must map block names to lists of numbers"),
    ("arch_space_config", "'space_config' must be an object"),
    ("arch_binary", "is not an architecture document (a JSON text file); it looks binary"),
    ("arch_classes", "The architecture has 100 classes but dataset 'bundled' has 10"),
    ("model_garbage", "is not a Keras model file (a .keras file is a zip archive"),
    ("model_truncated", "this one is damaged or truncated"),
    ("model_other_zip", "Cannot load --model"),
    ("model_directory", "is not a .keras file"),
    ("resume_missing", "Cannot resume"),
    ("resume_overwrite", "Choose one of --resume"),
    ("inherit_not_search", "is not a finished search run (it lacks "
                           "checkpoints/supernet.weights.h5): point --inherit_from at a search "
                           "run directory, or train from scratch with --set "
                           "train.inherit=false"),
    ("report_malformed", "is not a tfnas run summary"),
    ("name_path", "name: '../../x' does not match"),
    ("unknown_key", "Unknown configuration key 'search.epocs'"),
    ("offline_dataset", "bundled"),
    ("unknown_scope", "unknown search scope 'xl'"),
    ("unknown_activation", "unknown activations ['gelu']"),
    ("latency_without_table", "missing a required argument: 'table'"),
    ("missing_tflite", "No TFLite model"),
    ("arch_other_space", "The architecture is of space 'darts', the recipe's is 'grunas', "
                         "so config.json would not say what is trained"),
    ("arch_other_config", "configured otherwise than the recipe (widths)"),
    ("arch_space_alone", "--architecture_space takes the space of --architecture"),
    ("arch_width_1e9", "widths[1][1] = 1,000,000,000 is larger than any size tfnas builds"),
    ("arch_filters_huge", "This architecture would have"),
    ("config_filters_huge", "The configured space's network would have"),
    ("tuner_no_trials", "search.tuner: max_trials: 0 is less than the minimum of 1"),
    ("config_deep", "nests its values too deeply"),
])
def test_bad_inputs_are_one_line_errors_before_anything_is_written(case, message, tmp_path,
                                                                  monkeypatch, capsys):
    out = tmp_path / "out"
    arch_file = tmp_path / "a.json"
    args = {
        "config_list": lambda: ["run", "--config", _write(tmp_path / "c.json", "[1, 2]")],
        "seed_text": lambda: ["run", "--set", "seed=abc"],
        "beta_text": lambda: ["run", "--set", "search.penalty.beta=abc"],
        "limit_text": lambda: ["run", "--set", "data.limit=abc"],
        "penalty_type": lambda: ["run", "--set", 'search.penalty={"type": "lagrange"}'],
        "optimizer_name": lambda: ["run", "--set", "search.optimizer.name=lamb"],
        "widths_bad": lambda: ["run", "--set", "space.config.widths=[[12]]"],
        "num_classes": lambda: ["run", "--set", "space.config.num_classes=100"],
        "input_shape": lambda: ["run", "--set", "space.config.input_shape=[64,64,3]"],
        "arch_probabilities": lambda: ["train", "--architecture", _write(
            arch_file, json.dumps({**ARCH, "probabilities": "high"}))],
        "arch_space_config": lambda: ["train", "--architecture", _write(
            arch_file, json.dumps({**ARCH, "space_config": [1]}))],
        "arch_binary": lambda: ["train", "--architecture", _write(
            arch_file, bytes(range(256)) * 4)],
        "arch_classes": lambda: ["train", "--architecture", _write(arch_file, json.dumps(
            {**ARCH, "space_config": {**ARCH["space_config"], "num_classes": 100}}))],
        "model_garbage": lambda: ["export", "--model", _write(tmp_path / "m.keras",
                                                              b"garbage" * 9)],
        "model_truncated": lambda: ["export", "--model", _truncated_keras(tmp_path)],
        "model_other_zip": lambda: ["export", "--model", _zip_of_text(tmp_path)],
        "model_directory": lambda: ["export", "--model", str(tmp_path)],
        "resume_missing": lambda: ["run", "--resume", "--run_dir", str(tmp_path / "nope")],
        "resume_overwrite": lambda: ["run", "--resume", "--overwrite"],
        "inherit_not_search": lambda: ["train", "--architecture", _write(
            arch_file, json.dumps(ARCH)), "--inherit_from", str(tmp_path)],
        "report_malformed": lambda: ["report", "--runs", _summary_dir(tmp_path,
                                                                      '{"exports": 3}')],
        "name_path": lambda: ["run", "--set", "name=../../x"],
        "unknown_key": lambda: ["run", "--set", "search.epocs=1"],
        "offline_dataset": lambda: ["run", "--set", "data.dataset=cifar10", "--set",
                                    "data.download=false", "--set",
                                    "data.data_dir=/tmp/tfnas-empty-data-dir"],
        "unknown_scope": lambda: ["run", "--config", PRESNET.format("s"), "--set",
                                  "space.config.scope=xl"],
        "unknown_activation": lambda: ["run", "--config", PRESNET.format("s"), "--set",
                                       'space.config.activations=["relu","gelu"]'],
        "latency_without_table": lambda: ["run", "--config", PRESNET.format("s"), "--set",
                                          'search.cost={"type":"latency"}'],
        "missing_tflite": lambda: ["benchmark", "--model", "/nonexistent.tflite"],
        "arch_other_space": lambda: ["train", "--architecture",
                                     os.path.join(ROOT, "configs", "architectures",
                                                  "darts_v2.json")],
        "arch_other_config": lambda: ["train", "--architecture", _write(arch_file, json.dumps(
            {**ARCH, "space_config": {"widths": [[12, 24], [24, 24], [24, 24]]}}))],
        "arch_space_alone": lambda: ["run", "--architecture_space"],
        "arch_width_1e9": lambda: ["train", "--architecture", _write(arch_file, json.dumps(
            {**ARCH, "space_config": {"widths": [[12, 24], [24, 10 ** 9]]}}))],
        "arch_filters_huge": lambda: ["train", "--architecture", _write(arch_file, json.dumps(
            {"format": "tfnas.architecture", "version": 1, "space": "nasbench201",
             "space_config": {"filters": 60000},
             "choices": {f"n{i}_in{j}": "nor_conv_3x3" for i in range(1, 4)
                         for j in range(i)}}))],
        "config_filters_huge": lambda: ["search", "--config", os.path.join(
            ROOT, "configs", "nasbench201_dca_cpu.json"), "--set", "space.config.filters=60000",
                                        "--set", "data.limit=32"],
        "tuner_no_trials": lambda: ["search", "--set", "search.method=tuner", "--set",
                                    'search.tuner={"type": "random", "max_trials": 0}'],
        "config_deep": lambda: ["run", "--config", _write(
            tmp_path / "deep.json", '{"data": ' + "[" * 50_000 + "]" * 50_000 + "}")],
    }[case]()
    # TINY first: should a check be missed, the run stays short (the case's --set wins);
    # its widths are the grunas space's, not the ResNet recipes'.
    if not any("presnet50" in str(a) or "nasbench201" in str(a) for a in args):
        args = [args[0], *TINY, *args[1:]]
    if "--run_dir" not in args:
        args += ["--run_dir", str(out)]
    # In this process (the CLI's own main), to keep 23 cases within CI's time; the
    # subprocess cases above and below run the real command.
    code, stderr = cli_in_process(args, tmp_path, monkeypatch, capsys)
    assert code == 2, stderr[-3000:]
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert not out.exists() and not (tmp_path / "runs").exists()


def _truncated_keras(tmp_path):
    import keras  # pylint: disable=import-outside-toplevel

    path = tmp_path / "whole.keras"
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(path)
    data = path.read_bytes()
    return _write(tmp_path / "m.keras", data[: len(data) * 2 // 3])


def _zip_of_text(tmp_path):
    import zipfile  # pylint: disable=import-outside-toplevel

    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "not a model")
    return str(path)


def _summary_dir(tmp_path, text):
    run = tmp_path / "old-run"
    run.mkdir()
    (run / "summary.json").write_text(text)
    return str(run)


def test_overwrite_deletes_only_what_tfnas_created(tmp_path, cli):
    mine = tmp_path / "my-folder"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    result = cli("run", "--overwrite", "--run_dir", str(mine), *TINY)
    assert result.returncode == 2
    assert "was not created by tfnas" in result.stderr
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_export_overwrite_never_deletes_its_own_input(finished_run, cli):
    run_dir, _ = finished_run
    model = run_dir / "models" / "model.keras"
    before = model.read_bytes()
    result = cli("export", "--overwrite", "--run_dir", str(run_dir), "--model", str(model),
                   *TINY)
    assert result.returncode == 2
    assert "is an input of this command and lies inside" in result.stderr
    assert model.read_bytes() == before


def test_overwrite_never_deletes_a_file_the_config_names(tmp_path, cli):
    from tfnas.run_dir import RunDirectory  # pylint: disable=import-outside-toplevel

    run = RunDirectory(str(tmp_path / "R"))
    weights = tmp_path / "R" / "checkpoints" / "baseline.weights.h5"
    weights.write_bytes(b"weeks of training")
    result = cli("search", "--config", os.path.join(ROOT, "configs",
                                                    "compact_resnet32_group_lasso.json"),
                 "--set", "search.baseline_weights=R/checkpoints/baseline.weights.h5",
                 "--set", "data.limit=32", "--run_dir", "R", "--overwrite", cwd=str(tmp_path))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "R/checkpoints/baseline.weights.h5 is an input of this command" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert weights.read_bytes() == b"weeks of training"
    assert os.path.exists(run.file(".tfnas-run"))


def test_train_with_the_architectures_own_space_records_it(tmp_path, cli):
    widths = [[12, 24], [24, 24]]
    doc = _write(tmp_path / "a.json", json.dumps(
        {**ARCH, "space_config": {"widths": widths}, "choices": {"unit_1": 1, "unit_2": 2}}))
    result = cli("train", "--config", QUICKSTART, *TINY, "--architecture", doc,
                 "--architecture_space", "--set", "train.inherit=false", "--run_dir",
                 str(tmp_path / "t"), "--verbose=0")
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    assert config["space"] == {"name": "grunas", "config": {"widths": widths}}


def test_resume_with_a_changed_config_names_the_change(finished_run, cli):
    run_dir, _ = finished_run
    result = cli("run", "--config", QUICKSTART, "--run_dir", str(run_dir), "--resume",
                   *TINY, "--set", "seed=7")
    assert result.returncode == 2
    assert "different configuration (changed: seed)" in result.stderr


def test_default_run_directories_stay_under_runs(tmp_path, cli):
    result = cli("latency-table", "--config", QUICKSTART, *ONE_BLOCK, "--num_runs", "2",
                 "--warmup_runs", "0", "--repeats", "1", cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    (made,) = (tmp_path / "runs").iterdir()
    assert made.name.startswith("quickstart-latency-table-")
    assert (made / ".tfnas-run").exists()


# Every scope goes through the same code; test_proxyless covers every scope's layout.
@pytest.mark.parametrize("scope, blocks, depths", [("s", 3, [1, 1, 1, 3])])
def test_scaled_down_presnet_search_runs_through_the_cli(scope, blocks, depths, tmp_path, cli):
    # Fewer fixed blocks in front of the scope keep CI's trace short.
    run_dir = tmp_path / scope
    result = cli("run", "--config", PRESNET.format(scope), "--run_dir", str(run_dir),
                   "--verbose=0", "--set", "search.epochs=2", "--set", "train.epochs=1",
                   "--set", "data.limit=64", "--set", "data.batch_size=32", "--set",
                   "export.formats=[]", "--set", f"space.config.depths={json.dumps(depths)}")
    assert result.returncode == 0, result.stderr[-3000:]
    arch = json.loads((run_dir / "architecture.json").read_text())
    assert arch["space"] == "resnet50" and len(arch["choices"]) == blocks
    assert arch["space_config"]["scope"] == scope
    assert set(arch["metadata"]) >= {"converged_epoch", "expected_cost", "cost_unit"}
    assert (run_dir / "models" / "model.keras").exists()
    for name in ("architecture.png", "architecture_blocks.png", "architecture_final.png"):
        assert (run_dir / "logs" / name).stat().st_size > 1000
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["choices"] == list(arch["choices"].values())
