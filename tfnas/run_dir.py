"""A run's own directory: config, logs, checkpoints, architecture, models, summary.

tfnas marks every directory it creates with a `.tfnas-run` file, and deletes
(`overwrite=True`) only a directory that carries that mark: a folder tfnas did
not create is never removed. The mark also records which stages of the run
have finished, so a resumed run reuses them instead of doing them again.
"""

import json
import os
import re
import shutil
import tempfile
import time

from tfnas.errors import TfnasError

MARKER = ".tfnas-run"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RunDirectoryError(TfnasError):
    """The run directory cannot be created, replaced or resumed as asked."""


class RunExistsError(RunDirectoryError, FileExistsError):
    """The run directory holds a previous run."""


def check_name(name):
    """A run name is a plain file name (letters, digits, `.`, `_`, `-`), never a path."""
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise RunDirectoryError(
            f"Run name {name!r} is not a plain name: use letters, digits, '.', '_' and '-' "
            "(it becomes runs/<name>-<command>-<time>); to write elsewhere pass --run_dir.")
    return name


def default_path(name, command, root="runs"):
    """`runs/<name>-<command>-<time>`, with a numbered suffix if that exists already."""
    base = os.path.join(root, f"{check_name(name)}-{command}-{time.strftime('%Y%m%d-%H%M%S')}")
    path, n = base, 1
    while os.path.exists(path):
        n += 1
        path = f"{base}-{n}"
    return path


def write_json_atomically(path, obj, indent=2):
    """Writes JSON to `path` so that a kill leaves the old file or the new one, never half.

    The temporary file is new for each call: two threads writing one file (a backup's
    heartbeat and its epoch end) shared one name, and one's rename found the file gone.
    `indent=None` writes one line with Python's C encoder, for large states written often
    (`json.dump` to a file, or any indent, takes the pure-Python one)."""
    directory, name = os.path.split(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(dir=directory, prefix=f"{name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(json.dumps(obj, indent=indent) + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def remove_run(path):
    """Deletes `path` if it is a run directory tfnas made (it carries the mark); leaves
    anything else alone."""
    if os.path.exists(os.path.join(path, MARKER)):
        shutil.rmtree(path)


def _inside(path, directory):
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return path == directory or path.startswith(directory + os.sep)


def _differences(saved, given, prefix=""):
    keys = sorted(set(saved) | set(given)) if isinstance(saved, dict) and isinstance(
        given, dict) else None
    if keys is None:
        return [] if saved == given else [prefix.rstrip(".") or "<config>"]
    return [d for k in keys for d in _differences(saved.get(k), given.get(k), f"{prefix}{k}.")]


class RunDirectory:
    """Creates (or reopens, with `resume=True`) the directory of one run.

    An existing, non-empty directory is refused unless `resume` (continue it
    from its checkpoints) or `overwrite` (delete it first) is given. Only a
    directory that tfnas created (it carries `.tfnas-run`) is deleted, and
    never one that holds any of `inputs`, the files the command reads.

    Layout: `.tfnas-run`, `config.json`, `architecture.json`, `summary.json`,
    `logs/`, `checkpoints/`, `models/`.

    Example:

    >>> import tempfile
    >>> run = RunDirectory(os.path.join(tempfile.mkdtemp(), "run"))
    >>> run.stage_done("search")
    False
    >>> run.finish_stage("search"); run.stage_done("search")
    True
    """

    def __init__(self, path, overwrite=False, resume=False, inputs=()):
        if overwrite and resume:
            raise RunDirectoryError("Choose one of --resume (continue the run) and "
                                    "--overwrite (delete it and start again), not both.")
        self.path = os.path.abspath(path)
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise RunDirectoryError(f"Run directory {self.path} is a file; choose another "
                                    "--run_dir.")
        exists = os.path.isdir(self.path) and bool(os.listdir(self.path))
        marked = os.path.exists(self.file(MARKER))
        if resume:
            if not os.path.exists(self.file("config.json")):
                raise RunDirectoryError(
                    f"Cannot resume: {self.path} is not a tfnas run (no config.json). "
                    "Check --run_dir, or start a new run without --resume.")
        elif exists and not overwrite:
            raise RunExistsError(
                f"Run directory {self.path} already holds a run. Pass --resume to continue "
                "it, --overwrite to delete and replace it, or choose another --run_dir.")
        elif exists:
            if not marked:
                raise RunDirectoryError(
                    f"--overwrite refused: {self.path} was not created by tfnas (it has no "
                    f"{MARKER} file), and tfnas deletes only its own run directories. Choose "
                    "another --run_dir, or empty that folder yourself.")
            for item in inputs:
                if item and _inside(item, self.path):
                    raise RunDirectoryError(
                        f"--overwrite refused: {item} is an input of this command and lies "
                        f"inside {self.path}, which --overwrite would delete. Write to "
                        "another --run_dir.")
            shutil.rmtree(self.path)
        self.resumed = exists and resume
        for sub in ("logs", "checkpoints", "models"):
            os.makedirs(os.path.join(self.path, sub), exist_ok=True)
        if not os.path.exists(self.file(MARKER)):
            self._write_marker({"format": "tfnas.run", "version": 1,
                                "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "stages": {}})

    def remove(self):
        """Deletes this run directory (tfnas made it: it carries the mark)."""
        remove_run(self.path)

    def file(self, *parts):
        return os.path.join(self.path, *parts)

    def write_json(self, name, obj):
        write_json_atomically(self.file(name), obj)

    def read_json(self, name):
        path = self.file(name)
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError) as err:
            raise RunDirectoryError(f"Cannot read {path}: {err}. The run directory is "
                                    "damaged; start a new run.") from None

    def _marker(self):
        return self.read_json(MARKER)

    def _write_marker(self, marker):
        self.write_json(MARKER, marker)

    def stage_done(self, stage):
        """Whether `stage` ("search", "train", "export") finished in this directory."""
        return os.path.exists(self.file(MARKER)) and stage in self._marker().get("stages", {})

    def finish_stage(self, stage, **info):
        """Records that `stage` finished; a resumed run reuses it."""
        marker = self._marker()
        marker.setdefault("stages", {})[stage] = {
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
        self._write_marker(marker)

    def save_config(self, config):
        """Writes config.json; on resume, refuses a config that differs from the saved one."""
        if self.resumed:
            saved = self.read_json("config.json")
            changed = _differences(saved, json.loads(json.dumps(config)))
            if changed:
                raise RunDirectoryError(
                    f"Cannot resume {self.path} with a different configuration (changed: "
                    f"{', '.join(changed)}); resume without --config and --set, or start a "
                    "new run.")
            return
        self.write_json("config.json", config)
