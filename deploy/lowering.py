"""Rewrites a trained model into an equal function that converts to faster TFLite."""

import keras
import numpy as np

from tfnas.layers import GroupedConv2D


def fold_batch_norms(model):
    """A copy of `model` with every BatchNormalization that follows a `GroupedConv2D` folded into it.

    The converter folds BN into built-in convolutions, not into a custom
    layer's per-group convolutions; left alone, such a BN runs as MUL and ADD
    over the concatenated groups and splits XNNPACK's int8 graph. Folding gives
    each group's kernel its slice of the BN scale and the layer a bias; the BN
    becomes an `Identity`. Inference only (the BN statistics are frozen).
    """
    bn_after = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            source = layer.input._keras_history.operation  # pylint: disable=protected-access
            if isinstance(source, GroupedConv2D) and not source.use_bias:
                bn_after[source.name] = layer

    folded_bns = {bn.name for bn in bn_after.values()}

    def clone(layer):
        if layer.name in bn_after:
            return GroupedConv2D.from_config({**layer.get_config(), "use_bias": True})
        if layer.name in folded_bns:
            return keras.layers.Identity(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    lowered = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        target = lowered.get_layer(layer.name)
        if layer.name in bn_after:
            bn = bn_after[layer.name]
            gamma, beta, mean, var = (np.asarray(w, np.float64) for w in bn.get_weights())
            scale = gamma / np.sqrt(var + bn.epsilon)
            kernels, start = [], 0
            for kernel, cout in zip(layer.kernels, layer.output_groups):
                kernels.append(np.asarray(kernel) * scale[start:start + cout])
                start += cout
            target.set_weights([k.astype(np.float32) for k in kernels]
                               + [(beta - mean * scale).astype(np.float32)])
        elif layer.weights and layer.name not in folded_bns:
            target.set_weights(layer.get_weights())
    return lowered
