"""Training with a compaction regularizer: `loss + strength * regularizer()` in `fit`."""

import keras

from tfnas.distribute import scale_loss


class RegularizedModel(keras.Model):
    """Trains `network` with its loss plus `strength * regularizer()`.

    `strength` is a `keras.Variable` (a schedule may assign it without a
    retrace); the epoch logs carry the regularizer's mean as `regularizer`.
    The weights are `network`'s own, so the trained network is used as is.

    Example:

    >>> import keras
    >>> from tfnas.compaction.group_lasso import GroupLasso
    >>> x = keras.Input((4, 4, 1))
    >>> net = keras.Model(x, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(
    ...     keras.layers.Conv2D(3, 1)(x))))
    >>> model = RegularizedModel(net, GroupLasso(net), strength=1e-3)
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> sorted(model.fit(keras.ops.ones((4, 4, 4, 1)), keras.ops.zeros((4,)), verbose=0)
    ...        .history)
    ['loss', 'regularizer']
    """

    def __init__(self, network, regularizer, strength, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.regularizer = regularizer
        self.strength = keras.Variable(float(strength), trainable=False, dtype="float32",
                                       name="regularizer_strength")
        self.regularizer_tracker = keras.metrics.Mean(name="regularizer")

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                    training=training)
        value = self.regularizer()
        self.regularizer_tracker.update_state(value)
        # Keras divides its loss by the replicas (tf.distribute sums gradients); so is this.
        return loss + scale_loss(self.strength * value)
