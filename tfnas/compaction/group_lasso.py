"""Group lasso over filters (Wen et al., 2016; as compared in Shafiee et al., 2020), as a
compaction algorithm."""

import numpy as np
from keras import ops

from tfnas import schema
from tfnas.compaction.algorithm import CompactionAlgorithm, register_algorithm
from tfnas.compaction.regularizers import ChannelRegularizer
from tfnas.compaction.surgery import resize
from tfnas.compaction.target import fit_to_target
from tfnas.compaction.training import RegularizedModel


class GroupLasso(ChannelRegularizer):
    """R = sum over tied channels g of sqrt(n_g) ||w_g||, w_g every producer's filter for
    the channel (a residual stream's channel is one group across the stem, the
    projections and the blocks' last convolutions) and n_g its number of weights: the
    group lasso of Yuan and Lin, which SSL (Wen et al.) applies to filters. A channel's
    score is its norm over the mean norm of its group (`by_group_normalized`): raw norms
    rank by fan-in instead, and on ResNet-32 the first cut measured that way (and one by
    the share of the norm left after training) took stages 2 and 3 down to one channel.

    Example:

    >>> import keras
    >>> x = keras.Input((4, 4, 1))
    >>> conv = keras.layers.Conv2D(2, 1, use_bias=False, kernel_initializer="ones")
    >>> model = keras.Model(x, keras.layers.Dense(1)(
    ...     keras.layers.GlobalAveragePooling2D()(conv(x))))
    >>> round(float(GroupLasso(model)()), 4)  # two filters of one weight 1
    2.0
    """

    def __init__(self, model, groups=None):
        super().__init__(model, groups)
        sizes = {p: ops.ones(self.model.get_layer(p).kernel.shape[-1]) * float(
            np.prod(self.model.get_layer(p).kernel.shape[:-1])) for p in self.producers}
        self.sizes = ops.convert_to_numpy(self.per_tied_channel(sizes))

    epsilon = 1e-12  # keeps the norm's gradient finite at 0

    def squared_norms(self):
        vectors = {}
        for p in self.producers:
            kernel = self.model.get_layer(p).kernel
            vectors[p] = ops.sum(ops.square(kernel), axis=tuple(range(len(kernel.shape) - 1)))
        return self.per_tied_channel(vectors)

    def __call__(self):
        return ops.sum(ops.sqrt(self.sizes) * ops.sqrt(self.squared_norms() + self.epsilon))

    def scores(self):
        return self.by_group_normalized(ops.sqrt(self.squared_norms()))


@register_algorithm
class GroupLassoCompaction(CompactionAlgorithm):
    """`search.algorithm: "group_lasso"`: train with `strength` x `GroupLasso`, then keep
    the channels of largest norm that fit the target."""

    name = "group_lasso"
    defaults = {"strength": 1e-4, "epochs": 10}  # ResNet-32: strength x R ~ the loss at first
    schema = {"strength": schema.number(minimum=0), "epochs": schema.integer(0)}

    def compact(self, network, session):
        regularizer = GroupLasso(network, session.groups)
        session.fit(RegularizedModel(network, regularizer, self.settings["strength"]),
                    self.settings["epochs"], "group_lasso")
        keep, macs = fit_to_target(session.graph, session.groups, regularizer.scores(),
                                   session.target_macs, session.tolerance)
        return resize(network, keep), macs
