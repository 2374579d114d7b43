"""Export of derived Keras models: SavedModel and float TFLite."""

import os

import numpy as np
import tensorflow as tf


class ExportError(RuntimeError):
    """A model cannot be exported as asked."""


def export_saved_model(model, path):
    """Writes a SavedModel with a `serving_default` signature (float images in [0, 255] → logits).

    It loads with plain TensorFlow (`tf.saved_model.load`), without tfnas.
    """
    model.export(path, format="tf_saved_model", verbose=False)
    return path


def convert_to_tflite(saved_model_dir, path):
    """Float32 TFLite from a SavedModel, built-in ops only (no Flex)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        flatbuffer = converter.convert()
    except Exception as err:  # pylint: disable=broad-except
        raise ExportError(f"TFLite conversion of {saved_model_dir} with built-in ops only "
                          f"failed: {err}") from err
    with open(path, "wb") as f:
        f.write(flatbuffer)
    return path


def tflite_interpreter(path, num_threads=1):
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=import-outside-toplevel

    if not os.path.exists(path):
        raise ExportError(f"No TFLite model at {path}.")
    interpreter = Interpreter(model_path=path, num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def evaluate_tflite(path, images, labels, num_threads=2):
    """Top-1 accuracy of a TFLite model with the LiteRT interpreter, one image at a time."""
    interpreter = tflite_interpreter(path, num_threads)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    correct = 0
    for image, label in zip(images, labels):
        interpreter.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
        interpreter.invoke()
        correct += int(np.argmax(interpreter.get_tensor(out["index"])[0]) == int(label))
    return correct / max(1, len(labels))
