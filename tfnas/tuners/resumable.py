"""A keras-tuner Oracle whose state survives a killed chief: what tfnas's oracles share."""

import contextlib
import json
import os

import keras_tuner as kt
import tensorflow as tf

from tfnas.run_dir import write_json_atomically
from tfnas.tuners.decisions import choices_of
from tfnas.tuners.distributed import wait_for_chief


class ResumableOracle(kt.Oracle):
    """`keras_tuner.Oracle` that a chief killed at any point resumes exactly.

    keras-tuner rewrites its JSON files in place, saves the oracle in the middle of
    `end_trial` (the trial both ended and still ongoing) and writes a new trial's file
    before the oracle's state. Here every file is written whole and then renamed, the
    state is saved once a trial's result is learned (`learn(trial)`, the subclass's
    hook), a trial the saved state never started is dropped on reload, a damaged state
    file or a project of another search space is a one-line error, and a worker waits
    for its chief `chief_timeout` seconds, then names the address it tried. `seed=0`
    is a seed (keras-tuner draws a random one for it).

    Subclasses implement `populate_space` and `learn`, and keep their own state under
    one key of `get_state()`.
    """

    def __init__(self, *args, chief_timeout=600, **kwargs):
        wait_for_chief(chief_timeout)
        super().__init__(*args, **kwargs)
        if kwargs.get("seed") is not None:
            # keras-tuner replaces a seed of 0 by a random one: seed 0 is a seed too.
            self.seed = int(kwargs["seed"])

    def learn(self, trial):
        """Takes in an ended trial (`COMPLETED`, `FAILED` or `INVALID`)."""

    @kt.synchronized
    def end_trial(self, trial):
        self._defer_saving = True
        try:
            super().end_trial(trial)
            self.learn(self.trials[trial.trial_id])
        finally:
            self._defer_saving = False
        self.save()

    def update_space(self, hyperparameters):
        name = type(self).__name__
        known_by_name = {hp.name: hp for hp in self.hyperparameters.space}
        saved = getattr(self, "_saved_names", None)
        new = sorted(hp.name for hp in hyperparameters.space if hp.name not in known_by_name)
        if saved and new:
            # After a reload keras-tuner builds the hypermodel only inside trials, so the
            # first trial of another space ends here.
            raise ValueError(
                f"{name}: this project holds a search over {sorted(saved)} but the "
                f"hypermodel declares {new}: it is another search space. Use another "
                "project_name, or overwrite=True.")
        for hp in hyperparameters.space:
            known = known_by_name.get(hp.name)
            if known is not None and known.conditions == hp.conditions:
                if choices_of(known, name) != choices_of(hp, name):
                    raise ValueError(
                        f"{name}: hyperparameter {hp.name!r} takes {choices_of(hp, name)} "
                        f"but this search's state has {choices_of(known, name)}: the state "
                        "is from another search space. Use another project_name, or "
                        "overwrite=True.")
        super().update_space(hyperparameters)

    def save(self):
        if not getattr(self, "_defer_saving", False):
            _write_json_atomically(self._get_oracle_fname(), self.get_state())

    def reload(self):
        with _damaged_state_is_an_error(self, self._project_dir):
            super().reload()
        # Names the hypermodel must declare: a reloaded search over another space would
        # hand its trials the old space's values.
        self._saved_names = {hp.name for hp in self.hyperparameters.space}
        # keras-tuner writes a new trial's file before the oracle's state: a chief killed
        # between the two leaves a trial the state never started. Its id is given again.
        for trial_id in set(self.trials) - set(self.start_order):
            del self.trials[trial_id]

    def _save_trial(self, trial):
        _write_json_atomically(os.path.join(self._get_trial_dir(trial.trial_id), "trial.json"),
                               trial.get_state())

    def set_state(self, state):
        name = type(self).__name__
        declared = {hp.name: (hp.conditions, choices_of(hp, name))
                    for hp in self.hyperparameters.space}
        super().set_state(state)
        for hp in self.hyperparameters.space:
            if hp.name in declared and declared[hp.name] != (hp.conditions,
                                                             choices_of(hp, name)):
                raise ValueError(
                    f"{name}: hyperparameter {hp.name!r} takes {declared[hp.name][1]} "
                    f"but the saved state has {choices_of(hp, name)}: the state is from "
                    "another search space. Use another project_name, or overwrite=True.")


class ResumableTuner(kt.Tuner):
    """A `keras_tuner.Tuner` whose own state file (`tuner0.json`) is written whole, then
    renamed: keras-tuner writes it in place, and a SIGKILL during that write left an
    empty file that no resume could read (seen on a killed ENAS search)."""

    def save(self):
        if not self._is_worker():
            self.oracle.save()
        _write_json_atomically(self._get_tuner_fname(), self.get_state())

    def reload(self):
        with _damaged_state_is_an_error(self, self.project_dir):
            super().reload()


@contextlib.contextmanager
def _damaged_state_is_an_error(owner, project_dir):
    """A state file that is not JSON (cut short) becomes one error naming the project. Only
    the decoding error: the oracle's own refusals (another space) pass through unchanged,
    and a tuner reloading its oracle does not wrap the oracle's error a second time."""
    try:
        yield
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{type(owner).__name__}: cannot reload the project in {project_dir}: a state "
            f"file is damaged ({type(err).__name__}: {err}). Restore it, use another "
            "project_name, or overwrite=True.") from None


def _write_json_atomically(path, state):
    """Local files are written whole, then renamed; remote ones (gs://...) by tf.io.gfile.
    One line, as keras-tuner writes them: the oracle's state is written several times a
    trial and grows with the trials (indented, its writing was most of a trial's cost)."""
    if "://" in str(path):
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(json.dumps(state))
        return
    write_json_atomically(path, state, indent=None)
