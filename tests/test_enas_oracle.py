"""EnasOracle: the ENAS controller as a keras-tuner Oracle, with real keras-tuner tuners."""

import json

import keras
import keras_tuner as kt
import numpy as np
import pytest

from tfnas.tuners import EnasOracle

MAX = kt.Objective("reward", "max")


class LookupTuner(kt.Tuner):
    """Each trial's reward is `reward(values)`; records the values in order."""

    def __init__(self, reward, **kwargs):
        super().__init__(**kwargs)
        self.reward, self.seen = reward, []

    def run_trial(self, trial, *args, **kwargs):
        values = dict(trial.hyperparameters.values)
        self.seen.append(values)
        return {"reward": self.reward(values)}


def _space(hp):
    hp.Choice("op", ["conv3", "conv5", "pool"])
    hp.Int("width", 8, 32, step=8)
    hp.Boolean("skip")
    hp.Fixed("depth", 3)
    with hp.conditional_scope("op", ["pool"]):
        hp.Choice("pool_size", [2, 3])


def _tuner(tmp_path, reward, name="t", overwrite=True, build=_space, oracle_class=EnasOracle,
           **oracle):
    oracle.setdefault("objective", MAX)
    oracle.setdefault("seed", 7)
    return LookupTuner(reward, oracle=oracle_class(**oracle), hypermodel=build,
                       directory=str(tmp_path), project_name=name, overwrite=overwrite)


def test_samples_valid_architectures_of_any_space(tmp_path):
    tuner = _tuner(tmp_path, lambda v: 0.0, max_trials=25, resample_seen=0)
    tuner.search(verbose=0)
    assert len(tuner.seen) == 25
    for values in tuner.seen:
        assert values["op"] in ("conv3", "conv5", "pool")
        assert values["width"] in (8, 16, 24, 32) and isinstance(values["width"], int)
        assert values["skip"] in (False, True) and values["depth"] == 3
        # The conditional decision is taken exactly when its parent selects it.
        assert ("pool_size" in values) == (values["op"] == "pool")
    assert {v["op"] for v in tuner.seen} == {"conv3", "conv5", "pool"}
    decisions = tuner.oracle.get_state()["enas"]["trial_decisions"]
    assert all(len(d) == (4 if v["op"] == "pool" else 3)
               for d, v in zip(decisions.values(), tuner.seen))


def test_a_one_value_choice_takes_its_value_without_a_decision(tmp_path):
    def build(hp):
        hp.Choice("stem", [16])
        hp.Choice("op", ["conv3", "pool"])

    tuner = _tuner(tmp_path, lambda v: 0.0, build=build, max_trials=4)
    tuner.search(verbose=0)
    assert all(v["stem"] == 16 for v in tuner.seen)
    assert set(tuner.oracle.probabilities()) == {"op"}
    assert tuner.oracle.most_likely_values()["stem"] == 16


def test_reinforce_moves_probability_to_the_rewarded_choice(tmp_path):
    def reward(values):
        return 1.0 if values["op"] == "pool" else 0.0

    tuner = _tuner(tmp_path, reward, max_trials=60, learning_rate=0.1,
                   samples_per_update=5, resample_seen=0, preset="released")
    before = tuner.oracle.probabilities()["op"]["pool"]
    tuner.search(verbose=0)
    after = tuner.oracle.probabilities()["op"]["pool"]
    assert tuner.oracle.updates == 12 and tuner.oracle.samples == 60
    assert after > before + 0.1, (before, after)
    # As released, the op decision's logits are capped at 0.44·tanh: ENAS keeps exploring.
    assert after < np.exp(0.44) / (np.exp(0.44) + 2 * np.exp(-0.44)) + 1e-6


def test_an_objective_to_minimize_rewards_the_lowest_score(tmp_path):
    def loss(values):
        return 0.0 if values["op"] == "conv5" else 1.0

    tuner = _tuner(tmp_path, loss, max_trials=60, learning_rate=0.1, samples_per_update=5,
                   objective=kt.Objective("reward", "min"), resample_seen=0)
    tuner.search(verbose=0)
    p = tuner.oracle.probabilities()["op"]
    assert p["conv5"] == max(p.values()) and p["conv5"] > 0.4, p


def test_failed_trials_get_the_configured_reward(tmp_path):
    def reward(values):
        if values["op"] == "conv3":
            raise kt.errors.FailedTrialError("infeasible")
        return 0.5

    tuner = _tuner(tmp_path, reward, max_trials=40, learning_rate=0.1, samples_per_update=5,
                   failed_reward=-1.0, max_consecutive_failed_trials=40, resample_seen=0)
    tuner.search(verbose=0)
    assert tuner.oracle.samples == 40
    p = tuner.oracle.probabilities()["op"]
    assert p["conv3"] < 0.25, p


def test_state_round_trip_gives_identical_next_samples(tmp_path):
    reward = lambda v: float(v["width"]) / 32 + (v["op"] == "pool")  # noqa: E731
    tuner = _tuner(tmp_path, reward, max_trials=13, samples_per_update=5)
    tuner.search(verbose=0)
    state = json.loads(json.dumps(tuner.oracle.get_state()))  # what oracle.json holds
    copy = EnasOracle(objective=MAX, seed=7)
    copy.trials = tuner.oracle.trials
    copy.set_state(state)
    assert copy.get_state()["enas"] == tuner.oracle.get_state()["enas"]
    first = [tuner.oracle.populate_space(f"x{i}")["values"] for i in range(5)]
    second = [copy.populate_space(f"x{i}")["values"] for i in range(5)]
    assert first == second


def test_a_warm_start_pretrains_the_controller_and_trains_the_given_architectures_first(
        tmp_path):
    given = [{"op": "pool", "width": 32, "skip": True, "pool_size": 3},
             {"op": "conv5", "width": 8, "skip": False}]
    reward = lambda v: float(v["width"]) / 32  # noqa: E731
    cold = _tuner(tmp_path, reward, name="cold", max_trials=6)
    warm = _tuner(tmp_path, reward, name="warm", max_trials=6, initial_values=given,
                  samples_per_update=3)
    p_cold = cold.oracle.probabilities(given[0])
    warm.search(verbose=0)
    # The first trials are the given architectures, in order, and were learned from.
    assert warm.seen[:2] == [{**given[0], "depth": 3}, {**given[1], "depth": 3}]
    assert warm.oracle.samples == 6 and warm.oracle.pretrained
    first = min(warm.oracle.trials)
    assert warm.oracle.get_state()["enas"]["trial_decisions"][first] == [
        ["op", 2], ["width", 3], ["skip", 1], ["pool_size", 1]]
    # Pre-training (alone: one trial, no controller step yet) made the given ones likelier
    # along their paths, up to a mean probability of one half per decision.
    prior = _tuner(tmp_path, reward, name="prior", max_trials=1, initial_values=given)
    prior.search(verbose=0)
    assert prior.oracle.updates == 0
    p_prior = prior.oracle.probabilities(given[0])
    for name, value in (("op", "pool"), ("width", "32"), ("skip", "True"),
                        ("pool_size", "3")):
        assert p_prior[name][value] > p_cold[name][value], (name, p_cold, p_prior)
    per_decision = [np.mean(np.log([prior.oracle.probabilities(g)[k][str(v)]
                                    for k, v in g.items()])) for g in given]
    assert np.log(0.5) - 0.1 < np.mean(per_decision) < np.log(0.9), per_decision
    # A resumed search neither pre-trains again nor repeats the given architectures.
    rest = _tuner(tmp_path, reward, name="warm", max_trials=9, overwrite=False,
                  initial_values=given, samples_per_update=3)
    rest.search(verbose=0)
    assert len(rest.seen) == 3 and {**given[0], "depth": 3} not in rest.seen
    assert rest.oracle.samples == 9 and rest.oracle.updates == 3
    with pytest.raises(ValueError, match="initial value 'conv7' of 'op' is not one of"):
        _tuner(tmp_path, reward, name="bad", max_trials=2,
               initial_values=[{"op": "conv7"}]).search(verbose=0)


def test_resume_with_overwrite_false_continues_the_same_search(tmp_path):
    reward = lambda v: float(v["width"]) / 32 + (v["op"] == "pool")  # noqa: E731
    whole = _tuner(tmp_path, reward, name="whole", max_trials=24, samples_per_update=5)
    whole.search(verbose=0)
    first = _tuner(tmp_path, reward, name="cut", max_trials=12, samples_per_update=5)
    first.search(verbose=0)
    # A new process would build everything again: a new tuner on the same project.
    rest = _tuner(tmp_path, reward, name="cut", overwrite=False, max_trials=24,
                  samples_per_update=5)
    rest.search(verbose=0)
    assert first.seen + rest.seen == whole.seen
    assert rest.oracle.get_state()["enas"]["controller"] == \
        whole.oracle.get_state()["enas"]["controller"]
    assert rest.oracle.updates == whole.oracle.updates == 4


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, only what reached the files survives."""


class OracleKilledAt(EnasOracle):
    """An EnasOracle whose process dies at one point of trial 05: right after keras-tuner's part
    of `end_trial`, or in `create_trial` between the trial's file and the oracle's file."""

    def __init__(self, point, **kwargs):
        super().__init__(**kwargs)
        self.point = point

    def learn(self, trial):
        if self.point == "end_trial" and trial.trial_id == "05":
            raise Killed
        super().learn(trial)

    def save(self):
        if self.point == "create_trial" and self.start_order[-1:] == ["05"]:
            raise Killed
        super().save()


@pytest.mark.parametrize("point", ["end_trial", "create_trial"])
def test_a_chief_killed_inside_the_oracle_resumes_the_same_search(tmp_path, point):
    reward = lambda v: float(v["width"]) / 32 + (v["op"] == "pool")  # noqa: E731
    whole = _tuner(tmp_path, reward, name="whole", max_trials=12, samples_per_update=3)
    whole.search(verbose=0)
    first = LookupTuner(reward, oracle=OracleKilledAt(point, objective=MAX, seed=7,
                                                      max_trials=12, samples_per_update=3),
                        hypermodel=_space, directory=str(tmp_path), project_name="cut")
    with pytest.raises(Killed):
        first.search(verbose=0)
    rest = _tuner(tmp_path, reward, name="cut", overwrite=False, max_trials=12,
                  samples_per_update=3)
    rest.search(verbose=0)
    # Trial 05 runs again (it was not ended) with the values it had, and is rewarded once.
    assert first.seen[:5] + rest.seen == whole.seen
    assert rest.oracle.end_order == whole.oracle.end_order
    assert rest.oracle.get_state()["enas"] == whole.oracle.get_state()["enas"]


def test_works_with_an_ordinary_tuner_and_hypermodel(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, 2, 64)

    def build_model(hp):
        model = keras.Sequential([keras.Input((4,)),
                                  keras.layers.Dense(hp.Choice("units", [4, 8]),
                                                     activation=hp.Choice("act",
                                                                          ["relu", "tanh"])),
                                  keras.layers.Dense(2)])
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        return model

    tuner = kt.Tuner(oracle=EnasOracle(objective="val_accuracy", max_trials=3, seed=1),
                     hypermodel=build_model, directory=str(tmp_path), project_name="plain")
    tuner.search(x, y, validation_data=(x, y), epochs=1, verbose=0)
    best = tuner.get_best_hyperparameters()[0]
    assert best.get("units") in (4, 8) and best.get("act") in ("relu", "tanh")
    tuner.results_summary()
    assert "val_accuracy" in capsys.readouterr().out


def test_bad_input_is_a_clear_error(tmp_path):
    def no_choices(hp):
        hp.Fixed("depth", 3)
        hp.Choice("stem", [16])  # one value: nothing to decide

    with pytest.raises(ValueError, match="no choices"):
        _tuner(tmp_path, lambda v: 0.0, build=no_choices, max_trials=2).search(verbose=0)

    def continuous(hp):
        hp.Float("lr", 1e-4, 1e-1)

    with pytest.raises(ValueError, match="hp.Float 'lr' has no step"):
        _tuner(tmp_path, lambda v: 0.0, build=continuous, max_trials=2).search(verbose=0)

    # A state saved by a search over another space: caught against the space the oracle was
    # given (keras-tuner does not rebuild the hypermodel's space when it reloads), and against
    # any hyperparameter a trial declares anew.
    saved = _tuner(tmp_path, lambda v: 0.0, name="p", max_trials=2)
    saved.search(verbose=0)
    other = kt.HyperParameters()
    other.Choice("op", ["a", "b"])
    with pytest.raises(ValueError, match="'op' takes \\['a', 'b'\\].*another search space"):
        EnasOracle(objective=MAX, hyperparameters=other).set_state(saved.oracle.get_state())
    with pytest.raises(ValueError, match="'op' takes \\['a', 'b'\\].*another search space"):
        saved.oracle.update_space(other)

    LookupTuner(lambda v: 0.0, oracle=kt.oracles.RandomSearchOracle(objective=MAX,
                                                                     max_trials=1),
                hypermodel=_space, directory=str(tmp_path), project_name="r").search(verbose=0)
    with pytest.raises(ValueError, match="holds no controller"):
        _tuner(tmp_path, lambda v: 0.0, name="r", overwrite=False, max_trials=2)
    with pytest.raises(ValueError, match="samples_per_update"):
        EnasOracle(objective=MAX, samples_per_update=0)


class BuildingTuner(kt.Tuner):
    """A plain tuner whose trials build the hypermodel, as `keras_tuner.Tuner` does."""

    def run_trial(self, trial, *args, **kwargs):
        self.hypermodel.build(trial.hyperparameters)
        return {"reward": 0.0}


def test_a_project_of_another_space_or_a_damaged_state_is_refused(tmp_path):
    def first(hp):
        hp.Choice("op", ["a", "b", "c"])

    def other(hp):
        hp.Choice("edge_0", [0, 1, 2, 3, 4])
        hp.Choice("edge_1", [0, 1, 2, 3, 4])

    def tuner(build, overwrite, trials=4):
        return BuildingTuner(oracle=EnasOracle(objective=MAX, max_trials=trials, seed=1),
                             hypermodel=build, directory=str(tmp_path), project_name="p",
                             overwrite=overwrite)

    tuner(first, True, trials=2).search(verbose=0)
    with pytest.raises(ValueError, match=r"a search over \['op'\] but the hypermodel declares "
                                         r"\['edge_0', 'edge_1'\]: it is another search"):
        tuner(other, False).search(verbose=0)
    state = tmp_path / "p" / "oracle.json"
    state.write_text(state.read_text()[:100])
    with pytest.raises(ValueError, match="oracle.json|a state file is damaged"):
        tuner(first, False)


def test_the_tuner_method_offers_the_enas_controller(tmp_path):
    from tfnas.errors import ConfigError
    from tfnas.methods.tuner import TUNER_SETTINGS, TUNERS

    TUNERS.check({"type": "enas", "learning_rate": 0.05}, **dict.fromkeys(TUNER_SETTINGS))
    with pytest.raises(ConfigError, match="enas.*learning_rat"):
        TUNERS.check({"type": "enas", "learning_rat": 0.05}, **dict.fromkeys(TUNER_SETTINGS))
    tuner = TUNERS.get({"type": "enas", "max_trials": 3, "samples_per_update": 2},
                       hypermodel=_space, objective="val_accuracy", seed=3,
                       directory=str(tmp_path), project_name="m", overwrite=True,
                       max_consecutive_failed_trials=5)
    assert isinstance(tuner.oracle, EnasOracle)
    assert (tuner.oracle.samples_per_update, tuner.oracle.learning_rate) == (2, 0.05)
    tuner = TUNERS.get({"type": "enas", "max_trials": 3, "preset": "released"},
                       hypermodel=_space, objective="val_accuracy", seed=3,
                       directory=str(tmp_path), project_name="r", overwrite=True,
                       max_consecutive_failed_trials=5)
    assert (tuner.oracle.samples_per_update, tuner.oracle.learning_rate,
            tuner.oracle.tanh_constant, tuner.oracle.initial_baseline) == (10, 0.0035, 1.10, 0.0)


def _free_port():
    import socket  # pylint: disable=import-outside-toplevel

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(role, directory, port, max_trials, overwrite, **env):
    import os  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    env = {**os.environ, "KERASTUNER_TUNER_ID": role, "KERASTUNER_ORACLE_IP": "127.0.0.1",
           "KERASTUNER_ORACLE_PORT": str(port), **env}
    script = os.path.join(os.path.dirname(__file__), "distributed_table_search.py")
    return subprocess.Popen([sys.executable, script, str(directory), str(max_trials),
                             "1" if overwrite else "0"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _oracle_state(directory):
    path = directory / "distributed" / "oracle.json"
    return json.loads(path.read_text()) if path.exists() else None  # written whole (renamed)


def test_chief_and_two_workers_and_a_chief_killed_and_restarted(tmp_path):
    import signal  # pylint: disable=import-outside-toplevel
    import time  # pylint: disable=import-outside-toplevel

    port, trials = _free_port(), 24
    chief = _start("chief", tmp_path, port, trials, True)
    workers = [_start(f"tuner{i}", tmp_path, port, trials, True) for i in range(2)]
    deadline = time.time() + 120
    while time.time() < deadline:
        state = _oracle_state(tmp_path)
        if state and len(state["end_order"]) >= 8:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the distributed search did not start: " + chief.communicate()[0][-2000:])
    chief.send_signal(signal.SIGKILL)
    chief.wait()
    before = _oracle_state(tmp_path)["enas"]
    assert before["updates"] >= 1  # the controller learned on the chief before the kill
    # The workers wait for a chief (gRPC wait_for_ready), but a call in flight when the chief
    # died fails, and the worker exits when keras-tuner next calls the chief (seen seconds
    # later under load): such a worker is started again, while the chief has trials to give.
    chief = _start("chief", tmp_path, port, trials, False)
    deadline = time.time() + 240
    while chief.poll() is None and time.time() < deadline:
        for i, worker in enumerate(workers):
            if worker.poll() is not None and worker.returncode != 0:
                output = worker.communicate()[0]
                assert "StatusCode.UNAVAILABLE" in output, output[-3000:]
                workers[i] = _start(f"tuner{i}", tmp_path, port, trials, False)
        time.sleep(0.2)
    output = chief.communicate(timeout=240)[0]
    assert chief.returncode == 0, output[-3000:]
    for worker in workers:  # one may have lost its call as the search ended
        output = worker.communicate(timeout=240)[0]
        assert worker.returncode == 0 or "StatusCode.UNAVAILABLE" in output, output[-3000:]
    state = _oracle_state(tmp_path)
    # keras-tuner writes a new trial's file before the oracle's state: a trial created as the
    # chief dies counts toward max_trials but never runs.
    assert trials - 1 <= len(set(state["end_order"])) <= trials
    enas = state["enas"]
    # The restarted chief went on from the saved controller; every ended trial rewarded once.
    assert enas["updates"] > before["updates"]
    assert set(enas["rewarded"]) == set(state["end_order"])
    assert enas["samples"] + len(enas["pending"]) == len(enas["rewarded"])
    logs = [(tmp_path / f"tuner{i}.log").read_text().split() for i in range(2)]
    assert all(logs), "both workers ran trials"


def test_a_worker_that_cannot_reach_the_chief_names_the_address(tmp_path):
    port = _free_port()
    worker = _start("tuner0", tmp_path, port, 4, True, CHIEF_TIMEOUT="1")
    output = worker.communicate(timeout=120)[0]
    assert worker.returncode != 0
    assert f"Cannot reach the keras-tuner chief at 127.0.0.1:{port}" in output
