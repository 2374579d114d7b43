"""`search.method: "enas"`: the EnasOracle drives one shared supernet through keras-tuner."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tfnas import pipeline
from tfnas.config import load_config
from tfnas.errors import ConfigError
from tfnas.run_dir import RunDirectory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "configs", "grunas_enas.json")
SMALL = ["data.limit=96", "data.batch_size=48", "search.child_steps=2",
         'space.config.widths=[[12,24],[24,24],[24,48]]', "space.config.candidates=[1,2,4]",
         'search.controller={"learning_rate": 0.05, "samples_per_update": 3}']


def _config(*overrides):
    return load_config(RECIPE, [*SMALL, *overrides])


def _search(path, *overrides, resume=False):
    config = _config(*overrides)
    run = RunDirectory(str(path), resume=resume)
    if not resume:
        run.save_config(config)
    return pipeline.search(config, run, verbose=0), run


def test_one_traced_step_serves_every_sampled_architecture(tmp_path, capsys):
    (arch, supernet), run = _search(tmp_path / "run", "search.trials=9")
    assert "deterministic is false" not in capsys.readouterr().out  # the default is exact
    trials = json.load(open(run.file("logs", "trials.json"), encoding="utf-8"))
    assert len(trials) == 9 and all(t["status"] == "COMPLETED" for t in trials)
    assert len({json.dumps(t["choices"], sort_keys=True) for t in trials}) > 1
    assert all(0.0 <= t["reward"] <= 1.0 for t in trials)
    # The child step was traced once for all nine architectures (the path is a variable).
    assert arch.metadata["child_step_traces"] == 1
    assert arch.metadata["method"] == "enas" and arch.metadata["controller_updates"] == 3
    assert set(arch.choices) == {"unit_1", "unit_2", "unit_3"}
    # The derived network starts from the shared weights of its path (train.inherit).
    model = arch.search_space().build_model(arch.choices)
    assert pipeline.prepare(_config("search.trials=9")).method.inherit(supernet, arch, model)


def _search_process(path, overrides, fresh):
    """The search in its own process (TensorFlow's default threading)."""
    script = ("import json; from tfnas import pipeline; from tfnas.config import load_config;"
              "from tfnas.run_dir import RunDirectory;"
              f"c = load_config({RECIPE!r}, {[*SMALL, *overrides]!r});"
              f"run = RunDirectory({str(path)!r}, resume={not fresh});"
              + ("run.save_config(c);" if fresh else "") +
              "a, _ = pipeline.search(c, run, verbose=0);"
              "json.dump(a.choices, open(run.file('choices.json'), 'w'))")
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def test_a_killed_search_resumes_to_the_uninterrupted_result(tmp_path):
    overrides = ["search.trials=8"]
    whole = _search_process(tmp_path / "whole", overrides, fresh=True)
    assert whole.wait() == 0, whole.stderr.read()[-3000:]
    # The same search in another process, killed (SIGKILL) after some trials...
    path = tmp_path / "cut"
    process = _search_process(path, overrides, fresh=True)
    oracle = path / "checkpoints" / "enas" / "oracle.json"
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None:
        try:
            if len(json.loads(oracle.read_text())["end_order"]) >= 4:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, process.stderr.read()[-3000:]
    assert 4 <= len(json.loads(oracle.read_text())["end_order"]) < 8
    before = json.loads(oracle.read_text())
    # ...and resumed: the ended trials are kept (not run again), the rest run, and the search
    # ends bit-identical to the uninterrupted one: rewards, controller, architecture.
    resumed = _search_process(path, overrides, fresh=False)
    assert resumed.wait() == 0, resumed.stderr.read()[-3000:]
    after = json.loads(oracle.read_text())
    assert after["end_order"][:len(before["end_order"])] == before["end_order"]
    whole_state = json.loads((tmp_path / "whole" / "checkpoints" / "enas" / "oracle.json")
                             .read_text())
    assert after["end_order"] == whole_state["end_order"] and len(after["end_order"]) == 8, (
        before["end_order"], after["end_order"])
    assert after["enas"] == whole_state["enas"] and after["enas"]["updates"] == 2
    trials = [json.load(open(p / "logs" / "trials.json", encoding="utf-8"))
              for p in (path, tmp_path / "whole")]
    assert trials[0] == trials[1] and all(t["status"] == "COMPLETED" for t in trials[0])
    assert (json.loads((path / "choices.json").read_text())
            == json.loads((tmp_path / "whole" / "choices.json").read_text()))


def test_bad_enas_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="search.controller: unknown keys \\['lr'\\]"):
        pipeline.prepare(_config('search.controller={"lr": 0.1}'))
    with pytest.raises(ConfigError, match="samples_per_update"):
        pipeline.prepare(_config('search.controller={"samples_per_update": 0}'))
    with pytest.raises(ConfigError, match="search.trials"):
        pipeline.prepare(_config("search.trials=0"))


def test_a_saved_state_that_does_not_fit_is_a_one_line_error(tmp_path):
    _, run = _search(tmp_path / "run", "search.trials=2")
    state = tmp_path / "run" / "checkpoints" / "enas_state.npz"
    with np.load(state) as stored:
        assert int(stored["trials_done"]) == 2
    np.savez(state, np.zeros(3), trials_done=np.int64(1))  # another search's state
    method = pipeline.prepare(_config("search.trials=2")).method
    with pytest.raises(ConfigError, match="enas_state.npz holds 1 arrays that do not fit"):
        method.search(RunDirectory(str(tmp_path / "run"), resume=True), verbose=0)


def test_a_damaged_tuner_file_is_a_one_line_error(tmp_path):
    # The tuner's own file is written whole, then renamed (ResumableTuner): a SIGKILL in
    # keras-tuner's in-place write once left it empty, and the resume was a JSON traceback.
    _, run = _search(tmp_path / "run", "search.trials=2")
    tuner_file = tmp_path / "run" / "checkpoints" / "enas" / "tuner0.json"
    assert json.loads(tuner_file.read_text()) is not None
    assert not [p.name for p in tuner_file.parent.iterdir() if p.name.endswith(".tmp")]
    tuner_file.write_text("")
    method = pipeline.prepare(_config("search.trials=3")).method
    with pytest.raises(ValueError, match="cannot reload the project in .*a state file is "
                                         "damaged"):
        method.search(RunDirectory(str(tmp_path / "run"), resume=True), verbose=0)
