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


def _checked_keep(groups, keep):
    """`{group: sorted kept positions}` for every group (all of them where `keep` leaves a
    group out), checked."""
    by_name = {g.name: g for g in groups}
    unknown = sorted(set(keep) - set(by_name))
    if unknown:
        raise ChannelGraphError(f"Unknown channel groups {unknown}; the model's groups are "
                                f"{sorted(by_name)}.")
    checked = {}
    for group in groups:
        positions = sorted({int(p) for p in keep.get(group.name, range(group.width))})
        if not positions:
            raise ChannelGraphError(
                f"Channel group {group.name!r} would keep none of its {group.width} channels; "
                "every group keeps at least one (lower the threshold or the target's "
                "reduction).")
        if positions[0] < 0 or positions[-1] >= group.width:
            raise ChannelGraphError(f"Channel group {group.name!r} has {group.width} "
                                    f"channels; positions {positions} are out of range.")
        if group.fixed and len(positions) != group.width:
            raise ChannelGraphError(f"Channel group {group.name!r} reaches the model's input "
                                    "or output (the classes) and keeps all its channels.")
        checked[group.name] = positions
    return checked


def resize(model, keep, grow=None, seed=None, name=None):
    """A copy of functional `model` keeping, per group name, the tied channels at the given
    positions (`{group: [position, ...]}`, positions into `ChannelGroup.channels`) and adding
    `grow[group]` new channels at the end of a group; groups left out keep everything.

    Surviving weights are copied. A new channel's producers start from their fresh
    initialization (seeded by `seed` when given, so that a resumed run grows the same
    weights), and every layer that reads it starts with zero weights for it, so the grown
    model computes what the cut one does until it is trained.
    """
    graph = channel_graph(model)
    groups = graph.groups()
    grow = grow or {}
    keep = _checked_keep(groups, keep)
    unknown = sorted(set(grow) - {g.name for g in groups if not g.fixed})
    if unknown:
        raise ChannelGraphError(f"Cannot grow channel groups {unknown}: they are not "
                                "resizable groups of the model.")
    extra = {g.name: int(grow.get(g.name, 0)) for g in groups}
    widths = {p: len(keep[g.name]) + extra[g.name] for g in groups for p in g.producers}

    resized = with_widths(model, widths, seed=seed)
    if name:
        resized.name = name
    old_key = _channel_keys(graph)
    new_graph = channel_graph(resized)
    new_key = _channel_keys(new_graph, keep)
    for old in model.layers:
        if not old.weights:
            continue
        new = resized.get_layer(old.name)
        ins = _sources(graph, new_graph, old.name, old_key, new_key)
        outs = (_sources(graph, new_graph, old.name, old_key, new_key, output=True)
                if isinstance(old, PRODUCERS) else None)
        new.set_weights([_copy(old, w, v, ins, outs) for w, v in zip(old.weights, new.weights)])
    return resized


def with_widths(model, widths, seed=None):
    """A clone of `model` (fresh weights) whose producers named in `widths` have that many
    filters or units; `seed` makes every initializer's draw reproducible."""
    index = {layer.name: i for i, layer in enumerate(model.layers)}

    def clone(layer):
        config = layer.get_config()
        if layer.name in widths:
            config["filters" if isinstance(layer, keras.layers.Conv2D) else "units"] = \
                widths[layer.name]
        if seed is not None:
            for key, value in config.items():
                if key.endswith("_initializer") and isinstance(value, dict) and \
                        "seed" in value.get("config", {}):
                    value["config"]["seed"] = int(seed) * 10007 + index[layer.name]
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


def _channel_keys(graph, keep=None):
    """A key per tied channel that names the same channel in a model and in its resized
    copy: `(group, position in the original)`, None for a grown channel, or the element
    itself for a channel no producer makes (the image's)."""
    keys = {}
    for group in graph.groups():
        kept = keep[group.name] if keep else range(group.width)
        for position, tied in enumerate(group.tied):
            keys[tied] = (group.name, kept[position]) if position < len(kept) else None
    return lambda e: keys.get(graph.find(e), ("input", graph.find(e)))


def _sources(old_graph, new_graph, layer_name, old_key, new_key, output=False):
    """For each input (output) channel of the resized layer, the original layer's channel it
    copies, or None for a grown one."""
    old = (old_graph.outputs if output else old_graph.inputs)[layer_name]
    new = (new_graph.outputs if output else new_graph.inputs)[layer_name]
    where = {old_key(e): i for i, e in enumerate(old)}
    return [None if new_key(e) is None else where[new_key(e)] for e in new]


def _copy(layer, weight, fresh, ins, outs):
    """The resized layer's value of `weight`: the original's at the surviving channels;
    for grown channels the fresh value, or 0 where a layer reads a grown channel."""
    old = np.asarray(keras.ops.convert_to_numpy(weight))
    value = np.array(keras.ops.convert_to_numpy(fresh))
    dst_in = [i for i, s in enumerate(ins) if s is not None]
    src_in = [ins[i] for i in dst_in]
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and \
            not isinstance(layer, keras.layers.DepthwiseConv2D):
        dst_out = [i for i, s in enumerate(outs) if s is not None]
        src_out = [outs[i] for i in dst_out]
        if value.ndim == 1:  # bias
            value[dst_out] = old[src_out]
            return value
        value[..., [i for i, s in enumerate(ins) if s is None], :] = 0
        value[..., np.array(dst_in)[:, None], np.array(dst_out)[None, :]] = \
            old[..., np.array(src_in)[:, None], np.array(src_out)[None, :]]
        return value
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        if value.ndim == 4:
            value[..., dst_in, :] = old[..., src_in, :]
        else:
            value[dst_in] = old[src_in]
        return value
    # Per-channel weights (BatchNorm, PReLU, Normalization) along the last axis.
    if value.ndim and old.shape[-1] == layer.input.shape[-1]:
        value[..., dst_in] = old[..., src_in]
        return value
    return old


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
