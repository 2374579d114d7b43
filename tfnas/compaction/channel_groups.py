"""Channel groups of a functional Keras model: channels that are kept or dropped together.

A convolution or dense layer *produces* channels. A residual addition ties
channel i of each of its inputs into one *tied channel*; a concatenation
lines its inputs' channels up; a depthwise convolution, a batch
normalization, an activation or a pooling carries its input's channels
through. A *channel group* is a set of producers connected by ties (a ResNet
stage's residual stream: its stem or projection and every block's last
convolution), and its *width* is its number of tied channels. Dropping a tied
channel removes it from every producer and every consumer that sees it, which
is what channel surgery (`tfnas.compaction.surgery`) does.

Example:

>>> import keras
>>> x = keras.Input((8, 8, 3))
>>> a = keras.layers.Conv2D(4, 3, padding="same", name="a")(x)
>>> b = keras.layers.Conv2D(4, 1, name="b")(a)
>>> y = keras.layers.Add(name="add")([a, b])
>>> model = keras.Model(x, keras.layers.Dense(2, name="out")(
...     keras.layers.GlobalAveragePooling2D()(y)))
>>> [(g.name, g.width, g.producers, g.fixed) for g in channel_groups(model)]
[('a', 4, ['a', 'b'], False), ('out', 2, ['out'], True)]
"""

import dataclasses

import keras

from tfnas.errors import TfnasError

L = keras.layers
# Layers that carry each input channel to the same output channel, with or without
# per-channel weights of their own.
PER_CHANNEL = (L.BatchNormalization, L.DepthwiseConv2D)
CARRIERS = (L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.PReLU, L.Softmax, L.Dropout,
            L.SpatialDropout2D, L.ZeroPadding2D, L.MaxPooling2D, L.AveragePooling2D,
            L.GlobalAveragePooling2D, L.GlobalMaxPooling2D, L.Identity, L.Rescaling,
            L.Normalization, L.Cropping2D, L.UpSampling2D, L.ActivityRegularization)
PRODUCERS = (L.Conv2D, L.Dense)
MERGES = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)
KNOWN = (keras.layers.InputLayer,) + PER_CHANNEL + CARRIERS + PRODUCERS + MERGES + (
    L.Concatenate,)


class ChannelGraphError(TfnasError, ValueError):
    """A model whose channels the graph walk cannot follow."""


@dataclasses.dataclass
class ChannelGroup:
    """Producers tied together, and their tied channels.

    Attributes:
        name: the first producer's layer name.
        producers: names of the convolutions and dense layers whose output
            channels the group's tied channels are.
        channels: the tied channels, in the first producer's order; each is
            `{producer name: its output channel index}`.
        fixed: whether the group reaches the model's input or output (the
            classes), so that its width cannot change.
    """

    name: str
    producers: list
    channels: list
    fixed: bool = False
    tied: list = dataclasses.field(default_factory=list, repr=False)  # ids in the graph

    @property
    def width(self):
        return len(self.channels)


class ChannelGraph:
    """The channels of every tensor of a functional model, by tied channel.

    `layout[layer name]` lists, for each channel of the layer's input (for a
    producer or a per-channel layer) the tied channel it is, as an index into
    `tied`. Made by `channel_graph(model)`.
    """

    def __init__(self, model):
        self.model = model
        self._parent = []       # union-find over channel elements
        self._owner = []        # element -> (producer, channel) or None (input, constants)
        self.inputs = {}        # layer name -> per-channel element ids of its (first) input
        self.outputs = {}       # layer name -> element ids of its output
        self.fixed = set()
        self._walk()

    # union-find
    def _new(self, owner):
        self._parent.append(len(self._parent))
        self._owner.append(owner)
        return len(self._parent) - 1

    def find(self, e):
        while self._parent[e] != e:
            self._parent[e] = self._parent[self._parent[e]]
            e = self._parent[e]
        return e

    def _union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            self._parent[max(a, b)] = min(a, b)

    def _walk(self):
        tensors = {}
        for x in self.model.inputs:
            tensors[id(x)] = [self._new(None) for _ in range(x.shape[-1])]
            self.fixed.update(tensors[id(x)])
        for layer in self.model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if not isinstance(layer, KNOWN) or isinstance(layer, keras.Model):
                raise ChannelGraphError(
                    f"Channel groups: layer {layer.name!r} is a {type(layer).__name__}, which "
                    f"the graph walk does not follow; it knows Conv2D, DepthwiseConv2D, Dense, "
                    f"BatchNormalization, activations, pooling, padding, Add and the other "
                    f"merges, and Concatenate. Rebuild the model from those layers.")
            if len(layer._inbound_nodes) != 1:  # pylint: disable=protected-access
                raise ChannelGraphError(f"Channel groups: layer {layer.name!r} is called "
                                        f"{len(layer._inbound_nodes)} times; shared layers "  # pylint: disable=protected-access
                                        "cannot be resized per call.")
            node = layer._inbound_nodes[0]  # pylint: disable=protected-access
            ins = [tensors[id(t)] for t in node.input_tensors]
            self.inputs[layer.name] = ins[0]
            out = self._layer_output(layer, ins)
            for t in node.output_tensors:
                tensors[id(t)] = out
            self.outputs[layer.name] = out
        for y in self.model.outputs:
            self.fixed.update(tensors[id(y)])
        self.fixed = {self.find(e) for e in self.fixed}

    def _layer_output(self, layer, ins):
        if isinstance(layer, L.Conv2D):
            if layer.groups != 1:
                raise ChannelGraphError(
                    f"Channel groups: Conv2D {layer.name!r} has groups={layer.groups}; "
                    "grouped convolutions tie channels within each group and are not "
                    "resized. Split it into per-group convolutions or leave it out.")
            if layer.data_format != "channels_last":
                raise ChannelGraphError(f"Channel groups: {layer.name!r} is channels_first; "
                                        "tfnas resizes channels_last models.")
        if isinstance(layer, PRODUCERS):
            return [self._new((layer.name, j)) for j in range(layer.output.shape[-1])]
        if isinstance(layer, L.DepthwiseConv2D) and layer.depth_multiplier != 1:
            raise ChannelGraphError(f"Channel groups: DepthwiseConv2D {layer.name!r} has "
                                    f"depth_multiplier={layer.depth_multiplier}; only 1 is "
                                    "resized.")
        if isinstance(layer, PER_CHANNEL + CARRIERS):
            if isinstance(layer, L.PReLU) and layer.alpha.shape[-1] not in (1, len(ins[0])):
                raise ChannelGraphError(f"Channel groups: PReLU {layer.name!r} shares alpha "
                                        "across channels in a way the walk cannot follow.")
            return ins[0]
        if isinstance(layer, MERGES):
            widths = {len(i) for i in ins}
            if len(widths) != 1:
                raise ChannelGraphError(f"Channel groups: {type(layer).__name__} "
                                        f"{layer.name!r} merges inputs of widths "
                                        f"{[len(i) for i in ins]}.")
            for channel in zip(*ins):
                for e in channel[1:]:
                    self._union(channel[0], e)
            return ins[0]
        # Concatenate
        if layer.axis not in (-1, len(layer.output.shape) - 1):
            raise ChannelGraphError(f"Channel groups: Concatenate {layer.name!r} joins along "
                                    f"axis {layer.axis}, not the channels.")
        return [e for i in ins for e in i]

    def groups(self):
        """The channel groups, in the order of their first producer."""
        tied = {}  # root -> {producer: channel}
        for e, owner in enumerate(self._owner):
            if owner is None:
                continue
            channel = tied.setdefault(self.find(e), {})
            if owner[0] in channel:
                raise ChannelGraphError(
                    f"Channel groups: channels {channel[owner[0]]} and {owner[1]} of "
                    f"{owner[0]!r} are tied to each other (a tensor concatenated with "
                    "itself and added), so they cannot be dropped one at a time.")
            channel[owner[0]] = owner[1]
        # Producers sharing a tied channel are one group.
        order = [layer.name for layer in self.model.layers if isinstance(layer, PRODUCERS)]
        parent = {p: p for p in order}

        def root(p):
            while parent[p] != p:
                p = parent[p]
            return p
        for channel in tied.values():
            names = list(channel)
            for other in names[1:]:
                a, b = root(names[0]), root(other)
                if a != b:
                    first, second = sorted((a, b), key=order.index)
                    parent[second] = first
        groups = {}
        for r, channel in sorted(tied.items(), key=lambda kv: (
                order.index(root(next(iter(kv[1])))), _first_index(kv[1], order))):
            name = root(next(iter(channel)))
            group = groups.setdefault(name, ChannelGroup(name, [], []))
            group.channels.append(dict(sorted(channel.items(),
                                              key=lambda kv: order.index(kv[0]))))
            group.tied.append(r)
            group.fixed = group.fixed or r in self.fixed
        for group in groups.values():
            group.producers = [p for p in order if root(p) == group.name]
        return sorted(groups.values(), key=lambda g: order.index(g.name))

    def kept_positions(self, layer_name, dropped, output=False):
        """Positions of the channels of `layer_name`'s input (or output) that are not in
        the `dropped` tied channels."""
        elements = (self.outputs if output else self.inputs)[layer_name]
        return [i for i, e in enumerate(elements) if self.find(e) not in dropped]


def _first_index(channel, order):
    producer = min(channel, key=order.index)
    return (order.index(producer), channel[producer])


def channel_graph(model):
    """The `ChannelGraph` of a functional model; raises `ChannelGraphError` naming a layer
    it cannot follow."""
    if not isinstance(model, keras.Model) or not hasattr(model, "_inbound_nodes") or \
            not getattr(model, "_is_graph_network", True) or not model.inputs:
        raise ChannelGraphError("Channel groups need a functional Keras model "
                                "(keras.Model(inputs, outputs)).")
    return ChannelGraph(model)


def channel_groups(model):
    """The model's channel groups (see the module docstring)."""
    return channel_graph(model).groups()
