"""What a compaction algorithm adds to the training loss, and how it ranks channels.

A `ChannelRegularizer` is built on a model and its channel groups. Called
inside a traced train step, it returns a scalar made of the model's variables
(so its gradient flows); `scores()` ranks the tied channels after training,
lowest first to go (`tfnas.compaction.target.fit_to_target`).
"""

import numpy as np
from keras import ops

from tfnas.compaction.channel_groups import channel_graph


class ChannelRegularizer:
    """Base class: the model, its resizable groups, and each producer's place in them.

    `segments[producer]` gives, for each output channel of the producer, its
    tied channel's position among all resizable tied channels (`offsets[g]`
    is where group g starts), so that a per-output-channel vector of every
    producer sums into one vector over tied channels with one `segment_sum`.
    """

    def __init__(self, model, groups=None):
        self.model = model
        self.graph = channel_graph(model)
        self.groups = [g for g in (groups or self.graph.groups()) if not g.fixed]
        self.offsets, self.segments, self.position = {}, {}, {}
        total = 0
        for g in self.groups:
            self.offsets[g.name] = total
            for i, tied in enumerate(g.tied):
                self.position[tied] = total + i
            for position, channel in enumerate(g.channels):
                for producer, j in channel.items():
                    self.segments.setdefault(producer, {})[j] = total + position
            total += g.width
        self.size = total
        self.producers = [p for g in self.groups for p in g.producers]
        self._segment_ids = {p: np.array([self.segments[p][j] for j in sorted(self.segments[p])],
                                         "int32") for p in self.producers}

    def per_tied_channel(self, vectors):
        """Sums `{producer: tensor over its output channels}` into one tensor over the
        resizable tied channels."""
        data = ops.concatenate([vectors[p] for p in self.producers])
        ids = np.concatenate([self._segment_ids[p] for p in self.producers])
        return ops.segment_sum(data, ids, num_segments=self.size)

    def positions(self, layer_name, output=False):
        """For each input (or output) channel of a layer, its tied channel's position among
        the resizable ones, or -1 for a channel of a fixed group (the image, the classes)."""
        elements = (self.graph.outputs if output else self.graph.inputs)[layer_name]
        return np.array([self.position.get(self.graph.find(e), -1) for e in elements], "int32")

    def by_group(self, vector):
        """`{group: [value per tied channel]}` of a vector over tied channels."""
        vector = np.asarray(ops.convert_to_numpy(vector), "float64")
        return {g.name: vector[self.offsets[g.name]:self.offsets[g.name] + g.width].tolist()
                for g in self.groups}

    def by_group_normalized(self, vector):
        """`by_group`, each group's values divided by their mean: magnitudes of layers with
        different fan-in are not comparable (He initialization gives a 576-input filter half
        the RMS of a 144-input one), their shares of their own layer's mean are."""
        groups = self.by_group(vector)
        return {name: (np.asarray(values) / max(np.mean(values), 1e-12)).tolist()
                for name, values in groups.items()}

    def __call__(self):
        raise NotImplementedError

    def scores(self):
        raise NotImplementedError
