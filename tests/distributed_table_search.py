"""One process of a distributed EnasOracle (or, with ORACLE=evolution, EvolutionOracle) search
on a lookup table (tests/test_enas_oracle.py, tests/test_evolution_oracle.py).

    KERASTUNER_TUNER_ID=chief|tuner0|... KERASTUNER_ORACLE_IP=127.0.0.1 \
    KERASTUNER_ORACLE_PORT=PORT python tests/distributed_table_search.py DIR MAX_TRIALS OVERWRITE
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras_tuner as kt  # noqa: E402

from tfnas.tuners import EnasOracle, EvolutionOracle  # noqa: E402


class LookupTuner(kt.Tuner):
    def run_trial(self, trial, *args, **kwargs):
        values = trial.hyperparameters.values
        time.sleep(0.3)  # a trial takes a moment, so that several are in flight
        with open(os.path.join(sys.argv[1], f"{os.environ['KERASTUNER_TUNER_ID']}.log"), "a",
                  encoding="utf-8") as log:
            log.write(f"{trial.trial_id}\n")
        return {"reward": float(values["a"] * 2 + values["b"] - (values["c"] == "x"))}


def build(hp):
    hp.Int("a", 0, 3)
    hp.Int("b", 0, 2)
    hp.Choice("c", ["x", "y"])


def main():
    directory, max_trials = sys.argv[1], int(sys.argv[2])
    # Only the chief may start afresh: a worker's overwrite would delete the chief's files.
    overwrite = sys.argv[3] == "1" and os.environ["KERASTUNER_TUNER_ID"] == "chief"
    timeout = float(os.environ.get("CHIEF_TIMEOUT", "120"))
    if os.environ.get("ORACLE") == "evolution":
        oracle = EvolutionOracle(objective=kt.Objective("reward", "max"), max_trials=max_trials,
                                 seed=3, population_size=4, sample_size=2,
                                 chief_timeout=timeout)
    else:
        oracle = EnasOracle(objective=kt.Objective("reward", "max"), max_trials=max_trials,
                            seed=3, samples_per_update=4, learning_rate=0.05,
                            resample_seen=0, chief_timeout=timeout)
    tuner = LookupTuner(oracle=oracle, hypermodel=build, directory=directory,
                        project_name="distributed", overwrite=overwrite)
    tuner.search(verbose=0)


if __name__ == "__main__":
    main()
