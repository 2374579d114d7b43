"""Channel surgery: a plain Keras model with fewer channels, its surviving weights copied.

`resize(model, keep)` keeps, in every channel group (`channel_groups`), the
tied channels `keep` names; producers get fewer filters or units, and every
layer that sees a dropped channel loses that slice of its weights. Nothing is
masked: the result is built from ordinary Keras layers, so it saves, exports
and quantizes like any model. When every dropped channel is zero wherever a
layer reads it (`zero_channels`: its producers' outputs and per-channel
weights set to 0, followed by layers that map 0 to 0 such as ReLU, pooling
and additions), the resized model computes what the masked one does.

Example:

>>> import keras
>>> x = keras.Input((8, 8, 3))
>>> h = keras.layers.Conv2D(6, 3, name="conv")(x)
>>> model = keras.Model(x, keras.layers.Dense(2, name="out")(
...     keras.layers.GlobalAveragePooling2D()(h)))
>>> small = resize(model, {"conv": [0, 2, 5]})
>>> small.get_layer("conv").filters, tuple(small.get_layer("out").kernel.shape)
(3, (3, 2))
"""

import keras
import numpy as np

from tfnas.compaction.channel_groups import PRODUCERS, ChannelGraphError, channel_graph


def _dropped(graph, groups, keep):
    """The tied channels `keep` leaves out, checked."""
    by_name = {g.name: g for g in groups}
    unknown = sorted(set(keep) - set(by_name))
    if unknown:
        raise ChannelGraphError(f"Unknown channel groups {unknown}; the model's groups are "
                                f"{sorted(by_name)}.")
    dropped = set()
    for name, positions in keep.items():
        group = by_name[name]
        positions = sorted({int(p) for p in positions})
        if not positions:
            raise ChannelGraphError(
                f"Channel group {name!r} would keep none of its {group.width} channels; "
                "every group keeps at least one (lower the threshold or the target's "
                "reduction).")
        if positions[0] < 0 or positions[-1] >= group.width:
            raise ChannelGraphError(f"Channel group {name!r} has {group.width} channels; "
                                    f"positions {positions} are out of range.")
        if group.fixed and len(positions) != group.width:
            raise ChannelGraphError(f"Channel group {name!r} reaches the model's input or "
                                    "output (the classes) and keeps all its channels.")
        kept = set(positions)
        dropped.update(t for i, t in enumerate(group.tied) if i not in kept)
    return dropped


def resize(model, keep, name=None):
    """A copy of functional `model` keeping, per group name, the tied channels at the given
    positions (`{group: [position, ...]}`, positions into `ChannelGroup.channels`); groups
    left out keep everything. Surviving weights are copied."""
    graph = channel_graph(model)
    dropped = _dropped(graph, graph.groups(), keep)
    outputs = {layer.name: graph.kept_positions(layer.name, dropped, output=True)
               for layer in model.layers if isinstance(layer, PRODUCERS)}

    resized = with_widths(model, {layer: len(kept) for layer, kept in outputs.items()})
    if name:
        resized.name = name
    for old in model.layers:
        if not old.weights:
            continue
        new = resized.get_layer(old.name)
        inputs = graph.kept_positions(old.name, dropped)
        values = [_slice(old, w, inputs, outputs.get(old.name))
                  for w in old.weights]
        new.set_weights(values)
    return resized


def with_widths(model, widths):
    """A clone of `model` (fresh weights) whose producers named in `widths` have that many
    filters or units."""
    def clone(layer):
        config = layer.get_config()
        if layer.name in widths:
            config["filters" if isinstance(layer, keras.layers.Conv2D) else "units"] = \
                widths[layer.name]
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


def _slice(layer, weight, inputs, outputs):
    """The part of `weight` of `layer` that the kept input and output channels use."""
    value = np.asarray(keras.ops.convert_to_numpy(weight))
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and \
            not isinstance(layer, keras.layers.DepthwiseConv2D):
        if value.ndim == 1:  # bias
            return value[outputs]
        return value[..., inputs, :][..., outputs]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return value[..., inputs, :] if value.ndim == 4 else value[inputs]
    # Per-channel weights (BatchNorm, PReLU, Normalization) along the last axis.
    if value.ndim and value.shape[-1] == layer.input.shape[-1]:
        return value[..., inputs]
    return value


def zero_channels(model, drop):
    """Sets to zero, in place, what produces the tied channels at positions `drop`
    (`{group: [position, ...]}`): the producers' kernel slices and biases and the scale
    and offset of every batch normalization that sees them (its moving statistics are
    kept). Used to compare a resized model with its masked original."""
    graph = channel_graph(model)
    groups = {g.name: g for g in graph.groups()}
    dropped = {groups[name].tied[p] for name, positions in drop.items() for p in positions}
    for layer in model.layers:
        if isinstance(layer, PRODUCERS) and not isinstance(layer, keras.layers.DepthwiseConv2D):
            kept = set(graph.kept_positions(layer.name, dropped, output=True))
            out = [i for i in range(layer.output.shape[-1]) if i not in kept]
            values = [np.array(keras.ops.convert_to_numpy(w)) for w in layer.weights]
            for v in values:
                v[..., out] = 0
            layer.set_weights(values)
        elif isinstance(layer, keras.layers.BatchNormalization):
            kept = set(graph.kept_positions(layer.name, dropped))
            out = [i for i in range(layer.input.shape[-1]) if i not in kept]
            for v in (layer.gamma, layer.beta):
                if v is not None:
                    value = np.array(keras.ops.convert_to_numpy(v))
                    value[out] = 0
                    v.assign(value)
