"""MorphNet (Gordon et al., 2018; as compared in Shafiee et al., *State of compact
architecture search*, 2020): a FLOP regularizer on batch-norm scales, then shrink and
uniform expansion to the target.

The regularizer is the morph-net code's `GammaFlopsRegularizer`: for every
convolution, coeff = 2 H_out W_out k_h k_w and
R = coeff (alive_in sum|gamma_out| + alive_out sum|gamma_in|) (a depthwise
convolution: coeff (sum|gamma_in| + sum|gamma_out|)), a channel alive when its
|gamma| exceeds the threshold; dense layers count as 1x1 convolutions. A
tied channel's gamma is the largest |gamma| among the batch normalizations
of its producers (morph-net groups tied channels; taking the maximum is
tfnas's assumption of how). Channels of the image and of the classes count
as alive and carry no gamma.

After the regularized training, a group's width shrinks to its alive
channels a, and the uniform expansion gives it floor(m a) channels, with the
width multiplier m raised channel by channel until the network reaches the
FLOPs target (`tfnas.compaction.target.uniform_expansion`, which lands within
the tolerance under it). A group keeps its largest-|gamma| channels with their
weights; one that grows past its width gets new channels, initialized fresh
and read with zero weights, so the expanded network starts where the shrunk
one is (no training from scratch). MorphNet iterates: each round trains the
last round's network with the regularizer, then shrinks and expands it again.
"""

import numpy as np
from keras import layers, ops

from tfnas import schema
from tfnas.compaction.algorithm import CompactionAlgorithm, register_algorithm
from tfnas.compaction.regularizers import ChannelRegularizer
from tfnas.compaction.surgery import resize
from tfnas.compaction.target import WidthCost, uniform_expansion
from tfnas.compaction.training import RegularizedModel

COSTED = (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)


class MorphNetFlops(ChannelRegularizer):
    """MorphNet's FLOP regularizer (see the module docstring).

    Example:

    >>> import keras
    >>> x = keras.Input((2, 2, 1))
    >>> h = keras.layers.Conv2D(2, 1, use_bias=False)(x)
    >>> h = keras.layers.BatchNormalization(gamma_initializer="ones")(h)
    >>> model = keras.Model(x, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h)))
    >>> regularizer = MorphNetFlops(model)
    >>> # conv: 2*2*2*1*1 (1 * (1 + 1) + 2 * 0); dense: 2 * (2 * 0 + 3 * (1 + 1))
    >>> float(regularizer()), float(regularizer.alive_flops())
    (28.0, 28.0)
    """

    def __init__(self, model, groups=None, threshold=1e-3):
        super().__init__(model, groups)
        self.threshold = float(threshold)
        self.batch_norms = [(layer, self.positions(layer.name)) for layer in model.layers
                            if isinstance(layer, layers.BatchNormalization) and layer.scale]
        covered = np.zeros(self.size, bool)
        for _, positions in self.batch_norms:
            covered[positions[positions >= 0]] = True
        if not covered.all():
            raise ValueError("MorphNet regularizes batch-norm scales: every resizable channel "
                             "needs a BatchNormalization with a scale after its producer.")
        self.layers = []
        for layer in model.layers:
            if not isinstance(layer, COSTED) or layer.name not in self.graph.inputs:
                continue
            spatial = (int(np.prod(layer.output.shape[1:-1]))
                       if len(layer.output.shape) > 2 else 1)
            kernel = getattr(layer, "kernel_size", (1, 1))
            coeff = 2.0 * spatial * kernel[0] * kernel[1]
            ins = self.positions(layer.name)
            outs = ins if isinstance(layer, layers.DepthwiseConv2D) else \
                self.positions(layer.name, output=True)
            self.layers.append((coeff, isinstance(layer, layers.DepthwiseConv2D), ins, outs))

    def gammas(self):
        """|gamma| per resizable tied channel (the largest among its batch normalizations)."""
        data = ops.concatenate([ops.take(ops.abs(layer.gamma), np.flatnonzero(positions >= 0))
                                for layer, positions in self.batch_norms])
        ids = np.concatenate([positions[positions >= 0] for _, positions in self.batch_norms])
        return ops.segment_max(data, ids, num_segments=self.size)

    def _sums(self, vector, positions):
        """`(sum of vector over the channels at positions, number of fixed channels)`."""
        valid = positions[positions >= 0]
        total = ops.sum(ops.take(vector, valid)) if len(valid) else ops.convert_to_tensor(0.0)
        return total, float(np.sum(positions < 0))

    def _alive(self, gammas):
        return ops.stop_gradient(ops.cast(ops.greater(gammas, self.threshold), "float32"))

    def __call__(self):
        gammas = self.gammas()
        alive = self._alive(gammas)
        total = 0.0
        for coeff, depthwise, ins, outs in self.layers:
            gamma_in, _ = self._sums(gammas, ins)
            gamma_out, _ = self._sums(gammas, outs)
            if depthwise:
                total += coeff * (gamma_in + gamma_out)
                continue
            alive_in, fixed_in = self._sums(alive, ins)
            alive_out, fixed_out = self._sums(alive, outs)
            total += coeff * ((alive_in + fixed_in) * gamma_out + (alive_out + fixed_out) *
                              gamma_in)
        return total

    def alive_flops(self):
        """The FLOPs (2 x MACs) of the network of alive channels: the regularizer's cost."""
        alive = self._alive(self.gammas())
        total = 0.0
        for coeff, depthwise, ins, outs in self.layers:
            alive_in, fixed_in = self._sums(alive, ins)
            if depthwise:
                total += coeff * (alive_in + fixed_in)
                continue
            alive_out, fixed_out = self._sums(alive, outs)
            total += coeff * (alive_in + fixed_in) * (alive_out + fixed_out)
        return total

    def scores(self):
        return self.by_group(self.gammas())


def alive_widths(gammas, threshold):
    """`{group: channels with |gamma| above threshold}` (at least 1) from `{group: gammas}`."""
    return {name: max(1, int(np.sum(np.asarray(values) > threshold)))
            for name, values in gammas.items()}


def expanded_channels(gammas, widths):
    """`(keep, grow)` for `resize`: each group keeps its `widths[group]` largest-|gamma|
    channels, and grows new ones where the width exceeds what it has."""
    keep, grow = {}, {}
    for name, values in gammas.items():
        order = np.argsort(-np.asarray(values), kind="stable")
        keep[name] = sorted(int(i) for i in order[:widths[name]])
        grow[name] = max(0, widths[name] - len(values))
    return keep, grow


@register_algorithm
class MorphNetCompaction(CompactionAlgorithm):
    """`search.algorithm: "morphnet"`: `rounds` times, train with the FLOP regularizer for
    `epochs`, shrink to the alive channels and expand uniformly to the target (a group
    may grow past its width, up to the space's `max_multiplier`). `strength` null is
    1 / the network's FLOPs at the round's start (the morph-net code); the threshold is the
    morph-net README's `gamma_threshold`."""

    name = "morphnet"
    defaults = {"strength": None, "threshold": 1e-3, "epochs": 10, "rounds": 2}
    schema = {"strength": schema.number(minimum=0, nullable=True),
              "threshold": schema.number(exclusive_minimum=0), "epochs": schema.integer(0),
              "rounds": schema.integer(1)}

    def compact(self, network, session):
        s = self.settings
        for round_ in range(1, s["rounds"] + 1):
            regularizer = MorphNetFlops(network, threshold=s["threshold"])
            strength = s["strength"] or 1.0 / float(regularizer.alive_flops())
            stage = "morphnet" if round_ == 1 else f"morphnet_{round_}"
            session.fit(RegularizedModel(network, regularizer, strength), s["epochs"], stage)
            gammas = regularizer.scores()
            alive = alive_widths(gammas, s["threshold"])
            widths, macs = uniform_expansion(
                WidthCost(regularizer.graph), alive, session.target_macs, session.tolerance,
                {g: session.max_width(g) for g in alive})
            keep, grow = expanded_channels(gammas, widths)
            print(f"MorphNet round {round_}: {sum(alive.values())} alive channels, "
                  f"{2 * macs / 1e6:.3f} MFLOPs after the expansion, "
                  f"{sum(grow.values())} new")
            network = resize(network, keep, grow, seed=session.seed * 1000 + round_)
        return network, macs
