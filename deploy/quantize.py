"""Quantization-aware training in Keras 3, for any space: fake quantization the TFLite
converter reads.

`quantize_model(model)` returns a copy of a trained functional model in its
inference form (every BatchNormalization folded into the convolution before
it) where:

- every kernel is fake-quantized to 8 bits per tensor, symmetric in
  [-127, 127] (what int8 TFLite stores with per-tensor weights);
- every tensor that int8 TFLite keeps between ops is fake-quantized in a
  range that follows the data (an exponential average of batch minima and
  maxima, decay 0.999, started from a calibration on the float model), except
  the output of a convolution whose ReLU TFLite fuses into it, and layers that
  only move values (padding, shuffles, pooling to the max).

The layers are quantize-aware subclasses of the built-in ones, and the fake
quantization is `keras.quantizers.fake_quant_with_min_max_vars`, a
`FakeQuantWithMinMaxVars` op that the converter turns into int8 scales. No
per-space twin is needed: the rewrite works on the layers, whatever the space
built. `train_and_convert` fine-tunes and writes int8 TFLite.
"""

import keras
import numpy as np
from keras import ops

from tfnas.deploy.saved_model import export_saved_model
from tfnas.deploy.tflite import ExportError, convert
from tfnas.layers import ChannelShuffle, GroupedConv2D
from tfnas.layers.channel_shuffle import ChannelSplit

fake_quant = keras.quantizers.fake_quant_with_min_max_vars
# A BatchNormalization channel whose running variance is below this saw a constant input in
# training (a dead channel): it folds to its bias alone (see `fold_all_batch_norms`).
DEAD_VARIANCE = 1e-8


def quantize_weight(kernel):
    """8-bit symmetric per-tensor fake quantization of a kernel (narrow range)."""
    bound = ops.stop_gradient(ops.maximum(ops.max(ops.abs(kernel)), 1e-8))
    return fake_quant(kernel, -bound, bound, num_bits=8, narrow_range=True)


class ActivationQuantizer(keras.layers.Layer):
    """Fake-quantizes a tensor to 8 bits in a tracked range that always holds 0.

    In training the range moves toward each batch's min and max by an
    exponential average (`decay`); `calibrating = True` turns quantization off
    and accumulates the mean batch min and max instead (see `calibrate`).
    """

    def __init__(self, decay=0.999, **kwargs):
        super().__init__(**kwargs)
        self.decay = float(decay)
        self.calibrating = False
        self.share_range_of(self)

    def share_range_of(self, other):
        """Uses (and updates) the range of another quantizer from now on."""
        # Not tracked as a sublayer: the owner keeps its variables.
        object.__setattr__(self, "_owner", other)

    def build(self, input_shape):
        def scalar(name, value):
            return self.add_weight(name=name, shape=(), trainable=False,
                                   initializer=keras.initializers.Constant(value))

        self.range_min, self.range_max = scalar("range_min", -6.0), scalar("range_max", 6.0)
        self.sum_min, self.sum_max = scalar("sum_min", 0.0), scalar("sum_max", 0.0)
        self.batches = scalar("batches", 0.0)

    def call(self, inputs, training=None):
        owner = self._owner
        low = ops.minimum(ops.min(inputs), 0.0)
        high = ops.maximum(ops.max(inputs), 0.0)
        if owner.calibrating:
            owner.sum_min.assign_add(low)
            owner.sum_max.assign_add(high)
            owner.batches.assign_add(1.0)
            return inputs
        if training:
            owner.range_min.assign(owner.decay * owner.range_min + (1 - owner.decay) * low)
            owner.range_max.assign(owner.decay * owner.range_max + (1 - owner.decay) * high)
        return fake_quant(inputs, owner.range_min, owner.range_max, num_bits=8)

    def finish_calibration(self):
        n = max(float(self.batches.numpy()), 1.0)
        self.range_min.assign(min(float(self.sum_min.numpy()) / n, 0.0))
        self.range_max.assign(max(float(self.sum_max.numpy()) / n, 1e-6))
        self.calibrating = False

    def get_config(self):
        return {**super().get_config(), "decay": self.decay}


class QuantizeOutput(keras.layers.Layer):
    """Runs `layer`, then fake-quantizes its output (`ActivationQuantizer`)."""

    def __init__(self, layer, **kwargs):
        super().__init__(name=layer.name, **kwargs)
        self.layer = layer
        self.quantizer = ActivationQuantizer(name=f"{layer.name}_quant")

    def build(self, input_shape):
        # Built here, outside the scratch graph of the symbolic call: a Normalization keeps
        # tensors made in build.
        if not self.layer.built:
            self.layer.build(input_shape)
        self.quantizer.build(self.layer.compute_output_shape(input_shape))

    def call(self, inputs, training=None, mask=None):
        # A layer that takes a mask (Concatenate, Add) was recorded with one; none is used.
        del mask
        return self.quantizer(self.layer(inputs), training=training)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


class QuantConv2D(keras.layers.Conv2D):
    """`Conv2D` whose kernel is fake-quantized."""

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, quantize_weight(kernel))


class QuantDepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """`DepthwiseConv2D` whose kernel is fake-quantized."""

    def call(self, inputs):
        outputs = ops.depthwise_conv(inputs, quantize_weight(self.kernel), strides=self.strides,
                                     padding=self.padding, dilation_rate=self.dilation_rate,
                                     data_format=self.data_format)
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs) if self.activation is not None else outputs


class QuantDense(keras.layers.Dense):
    """`Dense` whose kernel is fake-quantized."""

    def call(self, inputs, training=None):
        outputs = ops.matmul(inputs, quantize_weight(self.kernel))
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs) if self.activation is not None else outputs


class QuantGroupedConv2D(GroupedConv2D):
    """`GroupedConv2D` whose group kernels are fake-quantized with one range for the layer
    (the per-tensor scale of the kernels as one weight).

    With a bias, TFLite runs the layer as it is written: one CONV_2D per group, a
    CONCATENATION (an int8 tensor with a scale of its own) and an int8 ADD of the bias; both
    roundings are simulated here.
    """

    def build(self, input_shape):
        super().build(input_shape)
        if self.use_bias and self.groups > 1:
            self.concatenated = ActivationQuantizer(name=f"{self.name}_concatenated")
            self.concatenated.build(self.compute_output_shape(input_shape))

    def call(self, inputs, training=None):
        bound = ops.stop_gradient(ops.maximum(
            ops.max(ops.stack([ops.max(ops.abs(k)) for k in self.kernels])), 1e-8))
        kernels, bias, use_bias = self.kernels, self.bias, self.use_bias
        try:
            self.kernels = [fake_quant(k, -bound, bound, num_bits=8, narrow_range=True)
                            for k in kernels]
            if self.groups == 1:
                return super().call(inputs)
            self.use_bias = False
            outputs = super().call(inputs)
        finally:
            self.kernels, self.use_bias = kernels, use_bias
        if not use_bias:
            return outputs
        return self.concatenated(outputs, training=training) + _as_int8_constant(bias)


class QuantNormalization(keras.layers.Normalization):
    """`Normalization` as int8 TFLite runs it: SUB, a rounded int8 tensor, then MUL.

    The centered tensor has a scale of its own in TFLite; quantizing it here too keeps the
    fine-tuned model and the int8 file in step from the first layer on.
    """

    def build(self, input_shape):
        super().build(input_shape)
        self.centered = ActivationQuantizer(name=f"{self.name}_centered")
        self.centered.build(input_shape)

    def call(self, inputs, training=None):
        if self.invert:
            return super().call(inputs)
        scale = 1.0 / ops.maximum(ops.sqrt(self.variance), keras.backend.epsilon())
        centered = self.centered(ops.subtract(inputs, _as_int8_constant(self.mean)),
                                 training=training)
        return ops.multiply(centered, _as_int8_constant(scale))


def _as_int8_constant(values):
    """A constant operand as int8 TFLite stores it: 8 bits over its range, 0 included."""
    values = ops.convert_to_tensor(values)
    return fake_quant(values, ops.minimum(ops.min(values), 0.0),
                      ops.maximum(ops.max(values), 0.0), num_bits=8)


class FoldedBatchNorm(keras.layers.Layer):
    """Where a BatchNormalization was before it was folded into the convolution before it."""

    def call(self, inputs, mask=None, training=None):  # the BN's recorded call arguments
        del mask, training
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


QUANTIZE_AWARE = {keras.layers.Conv2D: QuantConv2D,
                  keras.layers.DepthwiseConv2D: QuantDepthwiseConv2D,
                  keras.layers.Dense: QuantDense, GroupedConv2D: QuantGroupedConv2D,
                  keras.layers.Normalization: QuantNormalization}
# Layers that only move values: int8 TFLite keeps their input's scale.
PASS_THROUGH = (keras.layers.ZeroPadding2D, keras.layers.Identity, FoldedBatchNorm,
                keras.layers.MaxPooling2D,
                keras.layers.Reshape, keras.layers.Flatten, keras.layers.Dropout,
                keras.layers.InputLayer, ChannelShuffle, ChannelSplit)
CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, GroupedConv2D)


def _consumers(layer):
    return [node.operation for node in layer._outbound_nodes]  # pylint: disable=W0212


def _fused_relu(layer):
    """Whether TFLite fuses `layer` into the convolution before it (plain ReLU/ReLU6)."""
    if isinstance(layer, keras.layers.ReLU):
        return (float(layer.negative_slope) == 0 and float(layer.threshold) == 0
                and layer.max_value in (None, 6.0, 6))
    return isinstance(layer, keras.layers.Activation) and \
        getattr(layer.activation, "__name__", "") == "relu"


def _output_quantized(layer):
    if isinstance(layer, PASS_THROUGH):
        return False
    # TFLite fuses a ReLU into a convolution or an addition before it (a grouped convolution
    # with a bias ends in one); a concatenation stays an int8 tensor before the ReLU.
    if isinstance(layer, keras.layers.Add) or (
            isinstance(layer, CONVOLUTIONS)
            and (getattr(layer, "groups", 1) == 1 or layer.use_bias)):
        consumers = _consumers(layer)
        while len(consumers) == 1 and isinstance(consumers[0], (keras.layers.Identity,
                                                                FoldedBatchNorm)):
            consumers = _consumers(consumers[0])
        if len(consumers) == 1 and _fused_relu(consumers[0]):
            return False
    return True


def fold_all_batch_norms(model):
    """A copy of `model` in which each BatchNormalization right after a convolution (built-in,
    depthwise or grouped) is folded into it: the convolution gets the scale and a bias, the
    BatchNormalization becomes an `Identity`. Inference form: the statistics are frozen."""
    folds = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            source = layer.input._keras_history.operation  # pylint: disable=protected-access
            if (isinstance(source, CONVOLUTIONS) and len(_consumers(source)) == 1
                    and getattr(source, "activation", None) in (None, keras.activations.linear)):
                folds[source.name] = layer
    folded = {bn.name for bn in folds.values()}

    def clone(layer):
        if layer.name in folds:
            return layer.__class__.from_config({**layer.get_config(), "use_bias": True})
        if layer.name in folded:
            return FoldedBatchNorm(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    result = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if not layer.weights:
            continue
        target = result.get_layer(layer.name)
        if layer.name in folds:
            bn = folds[layer.name]
            gamma, beta, mean, var = (np.asarray(w, np.float64) for w in bn.get_weights())
            # A dead channel (constant input, variance ~0) keeps its output, the BN's beta,
            # and drops its kernel: folded, that kernel is multiplied by gamma/sqrt(eps), and
            # in a per-tensor scale it would round every live channel to zero and give
            # XNNPACK a requantization ratio it refuses.
            dead = var < DEAD_VARIANCE
            scale = np.where(dead, 0.0, gamma / np.sqrt(var + bn.epsilon))
            shift = np.where(dead, beta, beta - mean * scale)
            weights = layer.get_weights()
            bias = np.asarray(weights[-1], np.float64) if layer.use_bias else 0.0
            kernels = weights[:-1] if layer.use_bias else weights
            if isinstance(layer, GroupedConv2D):
                scaled, start = [], 0
                for kernel, cout in zip(kernels, layer.output_groups):
                    scaled.append(np.asarray(kernel) * scale[start:start + cout])
                    start += cout
            elif isinstance(layer, keras.layers.DepthwiseConv2D):
                k = np.asarray(kernels[0])
                scaled = [k * scale.reshape(k.shape[2], k.shape[3])]
            else:
                scaled = [np.asarray(kernels[0]) * scale]
            target.set_weights([k.astype(np.float32) for k in scaled]
                               + [(bias * scale + shift).astype(np.float32)])
        elif layer.name not in folded:
            target.set_weights(layer.get_weights())
    return result


def quantize_model(model):
    """The quantize-aware copy of a trained functional Keras model (see the module doc).

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 3, use_bias=False)(inputs)
    >>> x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    >>> q = quantize_model(keras.Model(inputs, keras.layers.Dense(2)(x)))
    >>> [type(l).__name__ for l in q.layers]
    ['InputLayer', 'QuantConv2D', 'FoldedBatchNorm', 'QuantizeOutput', 'QuantizeOutput']
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "_operations") or \
            isinstance(model, keras.Sequential):
        raise ExportError("Quantization-aware training rewrites functional Keras models; "
                          f"got {type(model).__name__}.")
    folded = fold_all_batch_norms(model)

    def clone(layer):
        cls = QUANTIZE_AWARE.get(type(layer))
        new = (cls.from_config(layer.get_config()) if cls is not None
               else layer.__class__.from_config(layer.get_config()))
        return QuantizeOutput(new) if _output_quantized(layer) else new

    quantized = keras.models.clone_model(folded, clone_function=clone)
    for layer in folded.layers:
        if layer.weights:
            target = quantized.get_layer(layer.name)
            inner = target.layer if isinstance(target, QuantizeOutput) else target
            quantizer_variables = {id(v) for q in inner._flatten_layers(include_self=False)  # noqa
                                   for v in q.weights}
            own = [v for v in inner.weights if id(v) not in quantizer_variables]
            for variable, value in zip(own, layer.get_weights(), strict=True):
                variable.assign(value)
    _share_concatenation_ranges(quantized)
    return quantized


def _producer(tensor):
    """The quantizing layer a tensor comes from, through layers that only move values."""
    layer = tensor._keras_history.operation  # pylint: disable=protected-access
    while isinstance(layer, PASS_THROUGH) and not isinstance(layer, keras.layers.InputLayer):
        layer = layer.input._keras_history.operation  # pylint: disable=protected-access
    return layer if isinstance(layer, QuantizeOutput) else None


def _share_concatenation_ranges(model):
    """Gives a concatenation's inputs the range of its output.

    int8 TFLite concatenates tensors of one scale: with a range of their own
    each input would be requantized by an extra QUANTIZE op (a larger, slower
    file than post-training int8, which gives them one scale too).
    """
    for layer in model.layers:
        if isinstance(layer, QuantizeOutput) and isinstance(layer.layer,
                                                             keras.layers.Concatenate):
            for tensor in layer.input:
                producer = _producer(tensor)
                if producer is not None:
                    producer.quantizer.share_range_of(layer.quantizer._owner)  # noqa: W0212


def quantizers(model):
    """The activation quantizers of a quantize-aware model, each once."""
    found = {}
    for layer in model._flatten_layers(include_self=False):  # pylint: disable=W0212
        if isinstance(layer, ActivationQuantizer):
            owner = layer._owner  # pylint: disable=protected-access
            found[id(owner)] = owner
    return list(found.values())


def calibrate(quantized, batches):
    """Sets every activation range to the mean batch min and max of the float model's tensor
    over `batches` (image batches): fine-tuning then starts where the ranges belong, not at
    [-6, 6]."""
    batches = list(batches)
    if not batches:
        raise ExportError("Range calibration needs at least one batch of images.")
    for q in quantizers(quantized):
        q.calibrating = True
    for images in batches:
        quantized(images, training=False)
    for q in quantizers(quantized):
        q.finish_calibration()


def steps_per_epoch_of(dataset):
    """Batches in one pass of a finite dataset (counted when its cardinality is unknown)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    steps = int(dataset.cardinality())
    if steps == tf.data.INFINITE_CARDINALITY:
        raise ExportError("Quantization-aware fine-tuning needs a finite train_data dataset "
                          "(one epoch per pass); drop .repeat().")
    if steps == tf.data.UNKNOWN_CARDINALITY:  # e.g. after filter(): count one pass
        steps = int(dataset.reduce(0, lambda n, _: n + 1))
    if steps == 0:
        raise ExportError("Quantization-aware fine-tuning got no batches: train_data is empty.")
    return steps


def train_and_convert(model, train_data, path, epochs=4, learning_rate=3e-4,
                      representative_data=None, calibration_steps=100, range_batches=20,
                      workdir=None, verbose=0):
    """Quantization-aware fine-tuning of a trained model, then int8 TFLite.

    Same recipe as the tfmot path (`tfnas.deploy.qat`): ranges calibrated on
    the float model, then SGD with momentum 0.9 and a cosine from
    `learning_rate`. Returns `(path, history, quantized_model)`.
    """
    import os  # pylint: disable=import-outside-toplevel
    import tempfile  # pylint: disable=import-outside-toplevel

    if representative_data is None:
        raise ExportError("Quantization-aware int8 needs representative_data (image batches "
                          "from the training data) for the input scale.")
    steps_per_epoch = steps_per_epoch_of(train_data)
    quantized = quantize_model(model)
    calibrate(quantized, [images for images, _ in train_data.take(range_batches)])
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate,
                                                      max(1, epochs * steps_per_epoch))
    quantized.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    history = quantized.fit(train_data, epochs=epochs, verbose=verbose) if epochs else None
    with tempfile.TemporaryDirectory(prefix="tfnas-qat-", dir=workdir) as tmp:
        saved = export_saved_model(quantized, os.path.join(tmp, "saved_model"))
        convert(saved, path, "int8", representative_data=representative_data,
                calibration_steps=calibration_steps, per_channel=False)
    logs = {k: [float(v) for v in vals] for k, vals in history.history.items()} if history \
        else {}
    return path, logs, quantized
