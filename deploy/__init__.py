"""Deployment of derived models: SavedModel, TFLite, evaluation and benchmarks."""

from tfnas.deploy.saved_model import SIGNATURE, export_saved_model
from tfnas.deploy.tflite import (MODES, ExportError, Runner, check_builtin_ops, convert,
                                 evaluate, interpreter, op_names)

__all__ = ["MODES", "SIGNATURE", "ExportError", "Runner", "check_builtin_ops", "convert",
           "evaluate", "export_saved_model", "interpreter", "op_names"]
