"""Exact resume: the whole training state at every epoch end, restored before `fit`.

Keras's `BackupAndRestore` keeps the weights and optimizer state, which is not
enough for a search to continue as if it had never stopped: random draws
(`SeedGenerator` states), schedule variables, the state of callbacks and the
time spent are lost, and logs written after the last backup are written again.
`TrainingBackup` saves every variable of the model and of its optimizers
(`model.variables` includes seed-generator states) and the state of the
callbacks it is given, atomically, at the end of each epoch. Data order is the
pipeline's job: `tfnas.data.pipeline` makes each epoch's batches a function of
`(seed, epoch)`, so the resumed epoch sees the batches it would have seen.
"""

import csv
import json
import os
import shutil
import threading
import time

import keras
import numpy as np

from tfnas.errors import TfnasError
from tfnas.run_dir import write_json_atomically


class BackupError(TfnasError):
    """A backup does not fit the model it should restore."""


def training_variables(model):
    """Every variable whose value a resumed `fit` needs, in a fixed order."""
    found, seen = [], set()
    optimizers = [getattr(model, name, None) for name in sorted(vars(model))]
    groups = [model.variables] + [o.variables for o in optimizers
                                  if isinstance(o, keras.optimizers.Optimizer)]
    for group in groups:
        for v in group:
            if id(v) not in seen:
                seen.add(id(v))
                found.append(v)
    return found


class TrainingBackup(keras.callbacks.Callback):
    """Saves the training state every epoch; `restore()` brings it back before `fit`.

    Args:
        directory: where the backup lives (tfnas removes it with `discard()`
            when the stage has finished).
        stateful: objects with `get_state()` / `set_state(state)` (callbacks
            with Python-side state, such as `ConvergenceStop`), keyed by name.
        csv_logs: `{path: first_epoch}` of CSV logs with an `epoch` column
            (0-based, or 1-based when `first_epoch` is 1); rows of epochs after
            the backup are dropped on restore, so a resumed run does not write
            them twice.

    Use it as the last callback, so it saves what the others wrote that epoch:

    >>> import tempfile
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> backup = TrainingBackup(tempfile.mkdtemp())
    >>> backup.restore(model)  # nothing saved yet: start at epoch 0
    0
    """

    def __init__(self, directory, stateful=None, csv_logs=None):
        super().__init__()
        self.directory = directory
        self.stateful = dict(stateful or {})
        self.csv_logs = dict(csv_logs or {})
        self.elapsed_before = 0.0
        self.finished = False
        self._start = None
        self._heartbeat = None
        self._time_lock = threading.Lock()
        self.heartbeat_seconds = 2.0

    @property
    def _state_path(self):
        return os.path.join(self.directory, "state.npz")

    @property
    def _meta_path(self):
        return os.path.join(self.directory, "state.json")

    @property
    def _time_path(self):
        return os.path.join(self.directory, "elapsed.json")

    def elapsed(self):
        """Seconds of training so far, the time before an interruption included."""
        now = time.time() - self._start if self._start is not None else 0.0
        return self.elapsed_before + now

    def restore(self, model):
        """Loads the last backup into `model`; returns the epoch to continue from."""
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        self._start = time.time()
        if os.path.exists(self._time_path):
            with open(self._time_path, encoding="utf-8") as f:
                self.elapsed_before = float(json.load(f)["seconds"])
        if not os.path.exists(self._meta_path):
            return 0
        with open(self._meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        variables = training_variables(model)
        # Shapes, not names: Keras numbers layer names per process ("dense_1").
        layout = _layout(variables)
        if layout != meta["variables"]:
            differ = next((i for i, (a, b) in enumerate(zip(layout, meta["variables"]))
                           if a != b), min(len(layout), len(meta["variables"])))
            raise BackupError(
                f"The backup in {self.directory} was written by a different model "
                f"({len(meta['variables'])} variables, this one has {len(layout)}; the first "
                f"difference is variable {differ}); "
                "resume with the run's own config, or start a new run.")
        with np.load(self._state_path) as state:
            for i, v in enumerate(variables):
                v.assign(state[f"v{i}"])
        for name, obj in self.stateful.items():
            obj.set_state(meta["callbacks"][name])
        epoch = int(meta["epoch"])
        for path, first in self.csv_logs.items():
            _trim_csv(path, epoch + first)
        self.finished = bool(meta["finished"])
        return epoch

    def on_train_begin(self, logs=None):
        # The time of an epoch that a kill interrupts still counts: a thread notes it
        # every few seconds (a batch hook would make Keras sync every step).
        self._stop_heartbeat = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, daemon=True)
        self._heartbeat.start()

    def _beat(self):
        while not self._stop_heartbeat.wait(self.heartbeat_seconds):
            self._write_time()

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.directory, exist_ok=True)
        variables = training_variables(self.model)
        tmp = self._state_path + ".tmp.npz"
        np.savez(tmp, **{f"v{i}": keras.ops.convert_to_numpy(v) for i, v in
                         enumerate(variables)})
        meta = {"epoch": epoch + 1, "finished": bool(self.model.stop_training),
                "variables": _layout(variables),
                "callbacks": {name: obj.get_state() for name, obj in self.stateful.items()}}
        # The meta file is replaced last: it names the epoch the state belongs to.
        os.replace(tmp, self._state_path)
        write_json_atomically(self._meta_path, meta)
        self._write_time()

    def on_train_end(self, logs=None):
        if self._heartbeat is not None:
            self._stop_heartbeat.set()
            self._heartbeat.join()
            self._heartbeat = None
        self._write_time()

    def _write_time(self):
        # The heartbeat thread and the epoch's end both write it: one at a time, so that
        # the later time is the one kept.
        with self._time_lock:
            os.makedirs(self.directory, exist_ok=True)
            write_json_atomically(self._time_path, {"seconds": self.elapsed()})

    def discard(self):
        """Removes the backup (the stage it protects has finished)."""
        shutil.rmtree(self.directory, ignore_errors=True)


def _layout(variables):
    return [[list(v.shape), str(v.dtype)] for v in variables]


def _trim_csv(path, first_dropped):
    """Drops the rows whose `epoch` column is `first_dropped` or later."""
    if not os.path.exists(path):
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or "epoch" not in rows[0]:
        return
    col = rows[0].index("epoch")
    kept = [rows[0]] + [r for r in rows[1:] if r and int(float(r[col])) < first_dropped]
    if len(kept) == len(rows):
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(kept)
    os.replace(tmp, path)
