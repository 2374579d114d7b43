"""Deployment of derived models: SavedModel and TFLite."""

from tfnas.deploy.export import (ExportError, convert_to_tflite, evaluate_tflite,
                                 export_saved_model, tflite_interpreter)

__all__ = ["ExportError", "convert_to_tflite", "evaluate_tflite", "export_saved_model",
           "tflite_interpreter"]
