"""TFLite conversion (float32, float16, dynamic range, full int8) with built-in ops only."""

import os

import numpy as np
import tensorflow as tf

from tfnas import quiet
from tfnas.errors import TfnasError

MODES = ("float32", "float16", "dynamic", "int8")


class ExportError(TfnasError, RuntimeError):
    """A model cannot be exported or read as asked."""


def convert(saved_model_dir, path, mode="float32", representative_data=None,
            calibration_steps=100, per_channel=True, strip_strings=True):
    """Converts a SavedModel to a `.tflite` file of built-in ops only.

    Args:
        saved_model_dir: a SavedModel (see `export_saved_model`).
        path: the `.tflite` file to write.
        mode: `"float32"`; `"float16"` (float16 weights); `"dynamic"` (int8
            weights, float activations); `"int8"` (int8 weights and activations,
            int8 input and output, calibrated on `representative_data`).
        representative_data: for int8, an iterable of float32 image batches (or
            `(images, labels)` pairs) drawn from the training data.
        calibration_steps: how many single images calibrate the int8 ranges.
        per_channel: int8 weights with one scale per output channel (default)
            or one per tensor (smaller file: no per-channel scale and zero-point
            arrays; usually a little less accurate).
        strip_strings: drop tensor names and other debug strings from the file.

    Returns the path. Raises `ExportError` when the model needs ops outside the
    TFLite built-in set (no Flex) or when int8 has no representative data.
    """
    if mode not in MODES:
        raise ExportError(f"Unknown TFLite mode {mode!r}; choose one of {MODES}.")
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        if representative_data is None:
            raise ExportError("int8 conversion needs representative_data: an iterable of "
                              "image batches from the training data to calibrate the "
                              "activation ranges.")
        configure_int8(converter, representative_data, calibration_steps)
        # No public switch for per-tensor weights in TF 2.21's converter.
        converter._experimental_disable_per_channel = not per_channel  # pylint: disable=protected-access
    return write(converter, path, f"({mode}) of {saved_model_dir}", strip_strings)


def configure_int8(converter, representative_data, calibration_steps):
    """Full integer quantization with int8 input and output."""
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(representative_data, calibration_steps)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8


def write(converter, path, what, strip_strings=True):
    """Converts, writes `path`, strips debug strings and checks that only built-in ops remain."""
    try:
        with quiet.native_output():
            flatbuffer = converter.convert()
    except Exception as err:  # pylint: disable=broad-except
        raise ExportError(f"TFLite conversion {what} with built-in ops only failed: "
                          f"{str(err)[-1500:]}") from err
    with open(path, "wb") as f:
        f.write(flatbuffer)
    if strip_strings:
        strip_debug_strings(path)
    check_builtin_ops(path)
    return path


def strip_debug_strings(path):
    """Removes tensor names and other debug strings from a `.tflite` file, in place."""
    from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=import-outside-toplevel

    model = flatbuffer_utils.read_model(path)
    flatbuffer_utils.strip_strings(model)
    flatbuffer_utils.write_model(model, path)


def _representative(data, steps):
    def images():
        count = 0
        for item in data:
            batch = item[0] if isinstance(item, (tuple, list)) else item
            for image in np.asarray(batch, dtype=np.float32):
                yield [image[None]]
                count += 1
                if count >= steps:
                    return
        if count == 0:
            raise ExportError("representative_data yielded no images.")
    return images


def interpreter(path, num_threads=1, delegates=True):
    """A LiteRT interpreter with tensors allocated; `ExportError` if the file is unusable.

    `delegates=False` leaves out the default XNNPACK delegate (to list the
    model's own ops, or to time the reference kernels).
    """
    from ai_edge_litert import interpreter as litert  # pylint: disable=import-outside-toplevel

    if not os.path.isfile(path):
        raise ExportError(f"No TFLite model at {path}.")
    resolver = (litert.OpResolverType.AUTO if delegates
                else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    try:
        with quiet.native_output():
            result = litert.Interpreter(model_path=path, num_threads=num_threads,
                                        experimental_op_resolver_type=resolver)
            result.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        raise ExportError(f"Cannot read TFLite model {path}: {err}") from None
    return result


def op_names(path):
    """The sorted set of op names in a `.tflite` model."""
    details = interpreter(path, delegates=False)._get_ops_details()  # pylint: disable=protected-access
    return sorted({d["op_name"] for d in details})


def check_builtin_ops(path):
    bad = [op for op in op_names(path) if op.startswith("Flex") or op == "CUSTOM"]
    if bad:
        raise ExportError(f"{path} contains ops outside the TFLite built-in set: {bad}.")


class Runner:
    """Runs a `.tflite` classifier on float images, quantizing int8 input and output."""

    def __init__(self, path, num_threads=1):
        self.interpreter = interpreter(path, num_threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def __call__(self, image):
        """`image`: float32 `(H, W, C)` or `(1, H, W, C)`; returns float logits `(classes,)`."""
        x = np.asarray(image, np.float32).reshape(self.input["shape"])
        if self.input["dtype"] != np.float32:
            scale, zero = self.input["quantization"]
            info = np.iinfo(self.input["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        self.interpreter.set_tensor(self.input["index"], x.astype(self.input["dtype"]))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])[0]
        if self.output["dtype"] != np.float32:
            scale, zero = self.output["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y


def evaluate(path, images, labels, num_threads=2):
    """Top-1 accuracy of a `.tflite` classifier with the LiteRT interpreter."""
    run = Runner(path, num_threads)
    correct = sum(int(np.argmax(run(x)) == int(y)) for x, y in zip(images, labels))
    return correct / max(1, len(labels))
