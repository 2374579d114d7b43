"""Sparse variational dropout (Molchanov et al., 2017; as compared in Shafiee et al.,
2020), with filters dropped by sparsity.

Every weight w of the baseline's resizable convolutions gets a learned
log sigma^2, so that log alpha = log sigma^2 - log w^2; training samples each
convolution's output with the local reparameterization trick (mean
conv(x, w), variance conv(x^2, sigma^2)) and adds the approximate KL
divergence of the paper (k1 = 0.63576, k2 = 1.87320, k3 = 1.48695) divided
by the number of training images, as its ELBO does. A weight with
log alpha > 3 is dropped. The paper's sparsity is unstructured; the seed
drops the filters that are sparser than a threshold. Here a tied channel's
score is the fraction of its filters' weights that survive, over its group's
mean fraction (sparse VD prunes late layers far more, and a global density
ranking took ResNet-32's stage 3 down to one channel), and the calibrated
cut (`tfnas.compaction.target.fit_to_target`) drops the sparsest
channels until the network fits the target; the surviving filters keep
their individual zeros.
"""

import keras
import numpy as np
from keras import ops

from tfnas import schema
from tfnas.compaction.algorithm import CompactionAlgorithm, register_algorithm
from tfnas.compaction.regularizers import ChannelRegularizer
from tfnas.compaction.surgery import resize
from tfnas.compaction.target import fit_to_target
from tfnas.compaction.training import RegularizedModel

K1, K2, K3 = 0.63576, 1.87320, 1.48695
LOG_ALPHA_DROP = 3.0


@keras.saving.register_keras_serializable("tfnas")
class VariationalConv2D(keras.layers.Conv2D):
    """`Conv2D` with a learned log sigma^2 per weight, sampled by the local
    reparameterization trick in training and deterministic (the mean) at inference.

    Example:

    >>> layer = VariationalConv2D(4, 3, padding="same")
    >>> x = keras.ops.ones((2, 8, 8, 3))
    >>> layer(x).shape == layer(x, training=True).shape == (2, 8, 8, 4)
    True
    """

    def __init__(self, *args, log_sigma2_initial=-10.0, seed=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.log_sigma2_initial = float(log_sigma2_initial)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        super().build(input_shape)
        self.log_sigma2 = self.add_weight(
            name="log_sigma2", shape=self.kernel.shape,
            initializer=keras.initializers.Constant(self.log_sigma2_initial))

    def log_alpha(self):
        return ops.clip(self.log_sigma2 - ops.log(ops.square(self.kernel) + 1e-8), -10.0, 10.0)

    def kl(self):
        """The paper's approximation of KL(q(w) || p(w)), summed over the kernel."""
        log_alpha = self.log_alpha()
        return -ops.sum(K1 * ops.sigmoid(K2 + K3 * log_alpha)
                        - 0.5 * ops.log1p(ops.exp(-log_alpha)) - K1)

    def call(self, inputs, training=False):
        outputs = self.convolution_op(inputs, self.kernel)
        if training:
            variance = self.convolution_op(ops.square(inputs), ops.exp(self.log_sigma2))
            noise = keras.random.normal(ops.shape(outputs), seed=self.seed_generator)
            outputs = outputs + ops.sqrt(variance + 1e-8) * noise
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs) if self.activation is not None else outputs

    def get_config(self):
        return {**super().get_config(), "log_sigma2_initial": self.log_sigma2_initial}


class VariationalKL(ChannelRegularizer):
    """The summed KL of every variational convolution divided by the training set's size;
    a tied channel's score is the fraction of its filters' weights with
    log alpha <= 3."""

    def __init__(self, model, examples, groups=None):
        super().__init__(model, groups)
        self.examples = float(examples)
        self.variational = [layer for layer in model.layers
                            if isinstance(layer, VariationalConv2D)]

    def __call__(self):
        return ops.sum(ops.stack([layer.kl() for layer in self.variational])) / self.examples

    def kept_masks(self):
        return {layer.name: ops.convert_to_numpy(layer.log_alpha()) <= LOG_ALPHA_DROP
                for layer in self.variational}

    def scores(self):
        masks = self.kept_masks()
        kept, sizes = {}, {}
        for p in self.producers:  # a producer that is not variational keeps every weight
            kernel = ops.convert_to_numpy(self.model.get_layer(p).kernel)
            mask = masks.get(p, np.ones(kernel.shape, bool))
            kept[p] = ops.convert_to_tensor(mask.reshape(-1, mask.shape[-1]).sum(0), "float32")
            sizes[p] = ops.convert_to_tensor(np.full(mask.shape[-1], mask[..., 0].size),
                                             "float32")
        return self.by_group_normalized(self.per_tied_channel(kept) /
                                        self.per_tied_channel(sizes))


def variational_copy(network, producers, log_sigma2_initial=-10.0, seed=None):
    """`network` with its `producers` (Conv2D layers) made `VariationalConv2D`, weights
    copied."""
    def clone(layer):
        config = layer.get_config()
        if layer.name in producers:
            return VariationalConv2D.from_config(
                {**config, "seed": seed, "log_sigma2_initial": log_sigma2_initial})
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(network, clone_function=clone)
    for layer in network.layers:
        if layer.weights:
            target = copy.get_layer(layer.name)
            extra = [ops.convert_to_numpy(w) for w in target.weights[len(layer.weights):]]
            target.set_weights(layer.get_weights() + extra)
    return copy


@register_algorithm
class VariationalDropoutCompaction(CompactionAlgorithm):
    """`search.algorithm: "variational_dropout"`: train the variational network for
    `epochs` with `kl_weight` x KL / N, then drop the sparsest channels to the target."""

    name = "variational_dropout"
    defaults = {"kl_weight": 1.0, "log_sigma2_initial": -10.0, "epochs": 10}
    schema = {"kl_weight": schema.number(minimum=0), "log_sigma2_initial": schema.number(),
              "epochs": schema.integer(0)}

    def compact(self, network, session):
        s = self.settings
        producers = {p for g in session.groups for p in g.producers
                     if isinstance(network.get_layer(p), keras.layers.Conv2D)}
        variational = variational_copy(network, producers, s["log_sigma2_initial"],
                                       session.seed)
        regularizer = VariationalKL(variational, session.examples, session.groups)
        session.fit(RegularizedModel(variational, regularizer, s["kl_weight"]), s["epochs"],
                    "variational_dropout")
        masks = regularizer.kept_masks()
        for layer in network.layers:  # the trained weights, dropped weights zeroed
            if layer.weights:
                values = variational.get_layer(layer.name).get_weights()[:len(layer.weights)]
                if layer.name in masks:
                    values[0] = values[0] * masks[layer.name]
                layer.set_weights(values)
        keep, macs = fit_to_target(session.graph, session.groups, regularizer.scores(),
                                   session.target_macs, session.tolerance)
        return resize(network, keep), macs
