"""Quantization-aware training with tensorflow-model-optimization, to an int8 TFLite model
(`export.qat_backend: "tfmot"`; the native Keras 3 path is `tfnas.deploy.quantize`).

tfmot supports `tf_keras` only and switches `tf.keras` to it when imported, so
this module is the one place that imports either; import it only for the
quantization-aware path (`pip install -e ".[qat]"`). The derived architecture
is rebuilt with tf_keras layers by the same builder (`layer_set=`), the trained
Keras 3 weights are copied layer by layer, the model is fine-tuned with fake
quantization, and converted to int8.
"""

import types

try:
    import tensorflow_model_optimization as tfmot
    import tf_keras
except ImportError as err:  # pragma: no cover - depends on the optional extra
    raise ImportError("Quantization-aware training needs the 'qat' extra: "
                      "pip install -e '.[qat]' (tensorflow-model-optimization, tf-keras).") \
        from err

import tensorflow as tf

from tfnas.architecture import Architecture
from tfnas.deploy.tflite import ExportError, configure_int8, write
from tfnas.layers.grouped_conv import group_sizes
from tfnas.deploy.lowering import fold_batch_norms
from tfnas.deploy.quantize import steps_per_epoch_of
from tfnas.layers.grunas_unit import register_concatenation

quantizers = tfmot.quantization.keras.quantizers
# Not exported by tfmot's public API; quantize_apply puts one before the first layer.
from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import \
    QuantizeLayer  # noqa: E402  pylint: disable=wrong-import-position


class GroupedConv2D(tf_keras.layers.Layer):
    """tf_keras twin of `tfnas.layers.GroupedConv2D` (same weights, same floor split)."""

    def __init__(self, filters, kernel_size, groups=1, use_bias=False, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.groups, self.use_bias = int(filters), int(groups), use_bias
        self.kernel_size = (kernel_size, kernel_size) if isinstance(kernel_size, int) \
            else tuple(kernel_size)
        self.output_groups = group_sizes(self.filters, self.groups)

    def build(self, input_shape):
        self.input_groups = group_sizes(int(input_shape[-1]), self.groups)
        self.kernels = [self.add_weight(name=f"kernel_{i}", shape=(*self.kernel_size, ci, co),
                                        initializer="he_normal")
                        for i, (ci, co) in enumerate(zip(self.input_groups,
                                                         self.output_groups))]
        self.bias = (self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
                     if self.use_bias else None)
        super().build(input_shape)  # wrappers call build() directly; mark it built once

    def call(self, inputs):
        pieces = tf.split(inputs, self.input_groups, axis=-1) if self.groups > 1 else [inputs]
        outs = [tf.nn.conv2d(x, k, strides=1, padding="VALID")
                for x, k in zip(pieces, self.kernels)]
        y = outs[0] if self.groups == 1 else tf.concat(outs, axis=-1)
        return y + self.bias if self.use_bias else y

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "groups": self.groups,
                "use_bias": self.use_bias}


class ChannelShuffle(tf_keras.layers.Layer):
    """tf_keras twin of `tfnas.layers.ChannelShuffle`."""

    def __init__(self, groups, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)

    def call(self, inputs):
        if self.groups == 1:
            return inputs
        h, w, c = inputs.shape[1:]
        x = tf.reshape(inputs, (-1, h, w, self.groups, c // self.groups))
        x = tf.transpose(x, (0, 1, 2, 4, 3))
        return tf.reshape(x, (-1, h, w, c))

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


register_concatenation(tf_keras.layers.Concatenate)


class GroupedConvQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """8-bit weights per group kernel, 8-bit output, like tfmot's Conv2D config."""

    def __init__(self, quantize_output=False):
        self.quantize_output = quantize_output

    def get_weights_and_quantizers(self, layer):
        # Per output channel: the folded BatchNorm scales differ a lot between channels.
        return [(k, quantizers.LastValueQuantizer(num_bits=8, symmetric=True,
                                                  narrow_range=True, per_axis=True))
                for k in layer.kernels]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        layer.kernels = list(quantize_weights)

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        if not self.quantize_output:
            return []  # a BatchNormalization follows and quantizes the output
        return [quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                  narrow_range=False)]

    def get_config(self):
        return {"quantize_output": self.quantize_output}


class PassThroughQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """For layers that only move values (shuffle) or come before the first quantizer."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


class OutputQuantizeConfig(PassThroughQuantizeConfig):
    """Float weights, 8-bit output: a BatchNormalization after a GroupedConv2D, which
    tfmot's registry cannot fuse (it fuses BN into built-in convolutions only)."""

    def get_output_quantizers(self, layer):
        return [quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                  narrow_range=False)]


def tf_keras_layer_set():
    L = tf_keras.layers
    return types.SimpleNamespace(
        Conv2D=L.Conv2D, BatchNormalization=L.BatchNormalization, ReLU=L.ReLU,
        DepthwiseConv2D=L.DepthwiseConv2D, Add=L.Add, Concatenate=L.Concatenate,
        Normalization=L.Normalization, ZeroPadding2D=L.ZeroPadding2D,
        GlobalAveragePooling2D=L.GlobalAveragePooling2D, Dense=L.Dense, Identity=L.Identity,
        Input=tf_keras.Input,
        Model=tf_keras.Model, GroupedConv2D=GroupedConv2D, ChannelShuffle=ChannelShuffle)


CUSTOM_OBJECTS = {"GroupedConv2D": GroupedConv2D, "ChannelShuffle": ChannelShuffle,
                  "GroupedConvQuantizeConfig": GroupedConvQuantizeConfig,
                  "PassThroughQuantizeConfig": PassThroughQuantizeConfig,
                  "OutputQuantizeConfig": OutputQuantizeConfig}


def rebuild_in_tf_keras(architecture, keras_model):
    """The derived architecture as a tf_keras model carrying `keras_model`'s weights.

    It is built in the inference form (BatchNorms after grouped convolutions
    folded into them), so that fake quantization sees the weights the int8
    file will hold: tfmot folds BN into built-in convolutions only.
    """
    if isinstance(architecture, dict):
        architecture = Architecture.from_dict(architecture)
    space = architecture.search_space()
    if not space.tfmot_layer_set:
        raise ExportError(
            f"The tfmot backend rebuilds a model in tf_keras, which the {architecture.space!r} "
            "space does not support; use export.qat_backend 'native' (every space).")
    model = space.build_model(architecture.choices, layer_set=tf_keras_layer_set(),
                              fold_batch_norms=True)
    for layer in fold_batch_norms(keras_model).layers:
        weights = layer.get_weights()
        target = model.get_layer(layer.name)
        if target.weights:
            target.set_weights(weights)
    return model


def quantize(model):
    """Wraps a tf_keras model with fake quantization (tfmot's default 8-bit scheme).

    The ranges start at tfmot's [-6, 6]: set them with `calibrate_ranges` before
    fine-tuning or converting.
    """
    annotate = tfmot.quantization.keras.quantize_annotate_layer

    def clone(layer):
        if isinstance(layer, GroupedConv2D):
            return annotate(layer, GroupedConvQuantizeConfig(quantize_output=layer.use_bias))
        if isinstance(layer, (ChannelShuffle, tf_keras.layers.Identity)):
            return annotate(layer, PassThroughQuantizeConfig())
        if isinstance(layer, tf_keras.layers.Normalization):
            return annotate(layer, OutputQuantizeConfig())
        if isinstance(layer, tf_keras.layers.BatchNormalization) and isinstance(
                layer.inbound_nodes[0].inbound_layers, GroupedConv2D):
            return annotate(layer, OutputQuantizeConfig())
        return annotate(layer)

    annotated = tf_keras.models.clone_model(model, clone_function=clone)
    with tfmot.quantization.keras.quantize_scope(CUSTOM_OBJECTS):
        return tfmot.quantization.keras.quantize_apply(annotated)


def _range_targets(quantized):
    """(range variables, name of the float layer whose output they cover) of every
    activation quantizer in a tfmot model."""
    targets = []
    for layer in quantized.layers:
        if isinstance(layer, tfmot.quantization.keras.QuantizeWrapperV2):
            for activation in layer._quantize_activations:  # pylint: disable=protected-access
                if getattr(activation, "_pre_activation_vars", None):
                    raise ExportError(
                        f"Layer {layer.layer.name!r} quantizes before its activation "
                        f"({activation.activation}); range calibration covers outputs only.")
                if getattr(activation, "_post_activation_vars", None):
                    targets.append((activation._post_activation_vars,  # pylint: disable=W0212
                                    layer.layer.name))
            if getattr(layer, "_output_quantizer_vars", None):
                targets.append((layer._output_quantizer_vars,  # pylint: disable=W0212
                                layer.layer.name))
        elif isinstance(layer, QuantizeLayer):
            targets.append((layer.quantizer_vars, layer.inbound_nodes[0].inbound_layers.name))
    return targets


def calibrate_ranges(quantized, model, batches):
    """Sets the fake-quantization ranges of `quantized` from the float `model` it wraps.

    tfmot starts every activation range at [-6, 6] and moves it by an exponential
    average with decay 0.999 per training step, so the few hundred steps of a
    fine-tuning leave the ranges mostly where they started: activations above 6 are
    clipped, small ones lose their resolution, and the GRUNAS paper network goes from
    43 % to chance (9 %) when fake-quantized. Fine-tuning then spends itself recovering
    instead of adapting to int8. Each range is set to the mean over `batches` of the
    tensor's per-batch min and max (what the average converges to); the weight
    ranges from the weights, as a training step would set them.

    Args:
        quantized: `quantize(model)`, whose layers keep `model`'s names.
        model: the float tf_keras model.
        batches: image batches (arrays or tensors) from the training data.
    """
    batches = list(batches)
    if not batches:
        raise ExportError("Range calibration needs at least one batch of images; "
                          "train_data is empty.")
    targets = _range_targets(quantized)
    names = sorted({name for _, name in targets})
    probe = tf_keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    lows, highs = {n: [] for n in names}, {n: [] for n in names}
    for images in batches:
        outputs = probe(images, training=False)
        for name, y in zip(names, outputs if len(names) > 1 else [outputs]):
            lows[name].append(float(tf.reduce_min(y)))
            highs[name].append(float(tf.reduce_max(y)))
    for variables, name in targets:
        # TFLite needs 0 inside every range.
        for key, value in (("min_var", min(sum(lows[name]) / len(lows[name]), 0.0)),
                           ("max_var", max(sum(highs[name]) / len(highs[name]), 0.0))):
            var = variables[key]
            var.assign(tf.fill(tf.shape(var), tf.constant(value, var.dtype)))
    for layer in quantized.layers:
        for weight, quantizer, variables in getattr(layer, "_weight_vars", []):
            quantizer(weight, True, weights=variables)  # a training call records the range


_steps_per_epoch = steps_per_epoch_of


def train_and_convert(architecture, keras_model, train_data, path, epochs=4,
                      learning_rate=3e-4, representative_data=None, calibration_steps=100,
                      range_batches=20, verbose=0):
    """Quantization-aware fine-tuning of a trained derived model, then int8 TFLite.

    The fake-quantization ranges start calibrated on the float model
    (`calibrate_ranges`); the fine-tuning is SGD with momentum 0.9 and a learning
    rate decaying from `learning_rate` to 0 along a cosine, as the float model was
    trained: a fine-tuning that restarts at a large constant rate moves the model as
    much as quantization does (on the GRUNAS paper network, ±1 point either way).

    Args:
        architecture: the model's architecture document.
        keras_model: the trained Keras 3 model (its weights start the fine-tuning).
        train_data: finite batched `(images, labels)` dataset for fine-tuning.
        path: the `.tflite` file to write (int8 weights, activations, input, output).
        epochs, learning_rate: fine-tuning length and initial learning rate.
        representative_data: image batches that set the int8 input scale.
        range_batches: batches of `train_data` whose float activations set the ranges.
    Returns `(path, history, qat_model)`; `qat_model` is the fine-tuned tf_keras
    model with fake quantization (its accuracy is what the int8 file should match).
    """
    if representative_data is None:
        raise ExportError("Quantization-aware int8 needs representative_data (image batches "
                          "from the training data) for the input and output scales.")
    steps = max(1, epochs * _steps_per_epoch(train_data))
    float_model = rebuild_in_tf_keras(architecture, keras_model)
    q = quantize(float_model)
    calibrate_ranges(q, float_model, [images for images, _ in train_data.take(range_batches)])
    schedule = tf_keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    q.compile(optimizer=tf_keras.optimizers.SGD(schedule, momentum=0.9),
              loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
    history = q.fit(train_data, epochs=epochs, verbose=verbose)
    converter = tf.lite.TFLiteConverter.from_keras_model(q)
    configure_int8(converter, representative_data, calibration_steps)
    write(converter, path, "of the quantization-aware model")
    return path, {k: [float(v) for v in vals] for k, vals in history.history.items()}, q


__all__ = ["ChannelShuffle", "GroupedConv2D", "calibrate_ranges", "quantize", "rebuild_in_tf_keras",
           "tf_keras_layer_set", "train_and_convert"]
