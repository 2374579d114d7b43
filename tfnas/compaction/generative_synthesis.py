"""Generative synthesis (Wong et al., 2018; as compared in Shafiee et al., 2020) as a
generator-inquisitor loop.

DarwinAI's algorithm is not public. The seed describes a generator that
synthesizes progressively more compact networks under the constraints and an
inquisitor that probes the networks' responses to learn what matters,
iterated until the targets are met. tfnas builds that loop from public
parts, and these are its assumptions:

- The inquisitor probes the network with `probe_batches` validation batches
  and measures, for every tied channel, the first-order change of the loss
  if the channel were removed: (sum over its batch normalizations of
  gamma * dL/dgamma + beta * dL/dbeta)^2, accumulated over the batches
  (Molchanov et al., 2019: zeroing a channel's scale and offset removes it).
- The generator is a rule, not a learned generative machine: each of
  `iterations` steps cuts the network to the next FLOPs level of a
  geometric schedule from the baseline to the target, keeping the channels
  the inquisitor ranks highest (`fit_to_target`), and fine-tunes the
  result for `epochs` before the inquisitor probes it again.
- No universal performance function: the constraint is the FLOPs target,
  reached by the last step within the tolerance.
"""

import numpy as np
import tensorflow as tf
from keras import layers, ops

from tfnas import schema
from tfnas.compaction.algorithm import CompactionAlgorithm, register_algorithm
from tfnas.compaction.channel_groups import channel_graph
from tfnas.compaction.regularizers import ChannelRegularizer
from tfnas.compaction.surgery import resize
from tfnas.compaction.target import fit_to_target
from tfnas.macs import count_macs


class Inquisitor(ChannelRegularizer):
    """Taylor importance of every resizable tied channel on probe batches (see the module
    docstring); `probe(batches, loss)` returns it as `{group: [importance]}`."""

    def __init__(self, model, groups=None):
        super().__init__(model, groups)
        self.batch_norms = [(layer, self.positions(layer.name)) for layer in model.layers
                            if isinstance(layer, layers.BatchNormalization)
                            and layer.scale and layer.center]
        self._step = tf.function(self._importance, reduce_retracing=True, autograph=False)

    def _importance(self, x, y, loss):
        variables = [v for layer, _ in self.batch_norms for v in (layer.gamma, layer.beta)]
        with tf.GradientTape() as tape:
            value = loss(y, self.model(x, training=False))
        grads = tape.gradient(value, variables)
        data, ids = [], []
        for k, (layer, positions) in enumerate(self.batch_norms):
            valid = np.flatnonzero(positions >= 0)
            change = layer.gamma * grads[2 * k] + layer.beta * grads[2 * k + 1]
            data.append(ops.take(change, valid))
            ids.append(positions[valid])
        return ops.square(ops.segment_sum(ops.concatenate(data), np.concatenate(ids),
                                          num_segments=self.size))

    def probe(self, batches, loss):
        total = np.zeros(self.size)
        for x, y in batches:
            total += ops.convert_to_numpy(self._step(x, y, loss))
        return self.by_group(total)


def flops_schedule(baseline, target, iterations):
    """The MACs each step cuts to: geometric from `baseline` to `target`."""
    return [baseline * (target / baseline) ** ((i + 1) / iterations) for i in range(iterations)]


@register_algorithm
class GenerativeSynthesis(CompactionAlgorithm):
    """`search.algorithm: "generative_synthesis"`: `iterations` x (the inquisitor probes,
    the generator cuts to the next FLOPs level, fine-tune `epochs`)."""

    name = "generative_synthesis"
    defaults = {"iterations": 3, "epochs": 3, "probe_batches": 8}
    schema = {"iterations": schema.integer(1), "epochs": schema.integer(0),
              "probe_batches": schema.integer(1)}

    def compact(self, network, session):
        s = self.settings
        probes = list(session.probe_batches(s["probe_batches"]))
        macs = count_macs(network)
        loss = session.loss
        for i, level in enumerate(flops_schedule(macs, session.target_macs, s["iterations"])):
            graph = channel_graph(network)
            groups = [g for g in graph.groups() if not g.fixed]
            importance = Inquisitor(network, groups).probe(probes, loss)
            last = i == s["iterations"] - 1
            keep, macs = fit_to_target(graph, groups, importance,
                                       session.target_macs if last else level,
                                       session.tolerance)
            network = resize(network, keep)
            session.fit(network, s["epochs"], f"generative_synthesis{i}")
        return network, macs
