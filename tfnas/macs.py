"""Multiply-accumulates of Keras models, layer by layer."""

import keras
import numpy as np

from tfnas.layers import GroupedConv2D


def layer_macs(layer):
    """MACs of one call of a built layer of a functional model, for one image.

    Counts convolutions (grouped and depthwise included) and dense layers;
    normalization, activations and element-wise ops count zero.
    """
    if not layer.weights:
        return 0
    out_shape = layer.output.shape
    in_channels = layer.input.shape[-1]
    spatial = int(np.prod(out_shape[1:-1])) if len(out_shape) > 2 else 1
    if isinstance(layer, GroupedConv2D):
        kh, kw = layer.kernel_size
        return spatial * kh * kw * sum(
            ci * co for ci, co in zip(layer.input_groups, layer.output_groups))
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return spatial * kh * kw * in_channels * layer.depth_multiplier
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        return spatial * kh * kw * (in_channels // layer.groups) * layer.filters
    if isinstance(layer, keras.layers.Dense):
        return in_channels * layer.units
    return 0


def count_macs(model):
    """Multiply-accumulates of one forward pass of a functional model, for one image.

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> count_macs(keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs)))
    3888
    """
    return int(sum(layer_macs(layer) for layer in model.layers))
