"""A run's own directory: config, logs, checkpoints, architecture, models, summary."""

import json
import os
import shutil


class RunExistsError(FileExistsError):
    """The run directory holds a previous run."""


class RunDirectory:
    """Creates (or reopens, with `resume=True`) the directory of one run.

    An existing, non-empty directory is refused unless `resume` (continue it
    from its checkpoints) or `overwrite` (delete it first) is given.

    Layout: `config.json`, `architecture.json`, `summary.json`, `logs/`,
    `checkpoints/`, `models/`.
    """

    def __init__(self, path, overwrite=False, resume=False):
        if overwrite and resume:
            raise ValueError("Choose one of overwrite and resume.")
        self.path = os.path.abspath(path)
        exists = os.path.isdir(self.path) and bool(os.listdir(self.path))
        if exists and not (resume or overwrite):
            raise RunExistsError(
                f"Run directory {self.path} already holds a run. Pass --resume to continue "
                "it, --overwrite to delete and replace it, or choose another --run_dir.")
        if resume and not os.path.exists(self.file("config.json")):
            raise FileNotFoundError(f"Cannot resume: {self.path} has no config.json.")
        if exists and overwrite:
            shutil.rmtree(self.path)
        self.resumed = exists and resume
        for sub in ("logs", "checkpoints", "models"):
            os.makedirs(os.path.join(self.path, sub), exist_ok=True)

    def file(self, *parts):
        return os.path.join(self.path, *parts)

    def write_json(self, name, obj):
        with open(self.file(name), "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")

    def read_json(self, name):
        with open(self.file(name), encoding="utf-8") as f:
            return json.load(f)

    def save_config(self, config):
        """Writes config.json; on resume, refuses a config that differs from the saved one."""
        if self.resumed:
            saved = self.read_json("config.json")
            if saved != json.loads(json.dumps(config)):
                raise ValueError(f"Cannot resume {self.path} with a different configuration; "
                                 "start a new run, or resume without --config and --set.")
            return
        self.write_json("config.json", config)
