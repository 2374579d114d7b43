"""A searchable choice between candidate layers."""

import keras
from keras import ops

from tfnas.layers import mixing as mixing_rules


@keras.saving.register_keras_serializable(package="tfnas")
class MixedOp(keras.layers.Layer):
    """Chooses among `candidates` with architecture logits and a mixing rule.

    The layer owns one trainable vector of architecture logits
    (`architecture_variables`); `tfnas.SearchModel` updates it with its own
    optimizer and keeps it away from the weight optimizer. Calling the layer
    returns `(output, weights)`: the mixed output and the weights a cost model
    should use for the expected cost (for a Gumbel rule, the sample that mixed
    this forward pass).

    Args:
        candidates: layers with identical output shapes.
        mixing: a `MixingRule` or its name (`"softmax"`, `"gumbel"`,
            `"gumbel_hard"`, `"binary"`, `"binary_two"`); share one rule
            between the ops of a supernet.
        choices: JSON-serializable labels of the candidates (e.g. group
            counts); default `0..n-1`.
        logits_initializer: initializer of the logits (default zeros: uniform).
        logits_from: another `MixedOp` with the same choices whose logits this op
            uses instead of owning a vector: a cell space whose cells of one type
            share one architecture (DARTS, NAS-Bench-201). The op then has no
            `architecture_variables`, `distributions` leaves it out, and it is
            rebuilt by its space's `build_supernet`, not by `from_config`.
        rematerialize: recompute the candidates' activations in the backward
            pass instead of keeping them until it (gradient checkpointing,
            `mixing.rematerialized`): a step keeps one op's activations at a
            time, for about one more forward pass of compute. Only rules that
            run every candidate use it. `tfnas.SearchModel(rematerialize=True)`
            sets it on every op.

    Example:

    >>> op = MixedOp([keras.layers.Dense(4), keras.layers.Dense(4, use_bias=False)],
    ...              mixing="softmax", choices=["bias", "no_bias"])
    >>> y, w = op(keras.ops.ones((2, 3)))
    >>> tuple(y.shape), keras.ops.convert_to_numpy(w).tolist()
    ((2, 4), [0.5, 0.5])
    """

    def __init__(self, candidates, mixing="softmax", choices=None,
                 logits_initializer="zeros", logits_from=None, rematerialize=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.rematerialize = bool(rematerialize)
        self.candidates = list(candidates)
        if len(self.candidates) < 2:
            raise ValueError(f"{self.name}: a MixedOp needs at least two candidates, "
                             f"got {len(self.candidates)}.")
        self.choices = list(range(len(self.candidates))) if choices is None else list(choices)
        if len(self.choices) != len(self.candidates):
            raise ValueError(f"{self.name}: {len(self.choices)} choice labels for "
                             f"{len(self.candidates)} candidates.")
        self.mixing = mixing_rules.get(mixing)
        self.logits_initializer = keras.initializers.get(logits_initializer)
        if logits_from is not None and (not isinstance(logits_from, MixedOp)
                                        or logits_from.choices != self.choices):
            raise ValueError(f"{self.name}: logits_from must be a MixedOp with the same choices "
                             f"{self.choices}, got {logits_from!r}.")
        # Not tracked as a sublayer: the owner's logits and candidates are not this op's.
        object.__setattr__(self, "_logits_from", logits_from)

    @property
    def owns_logits(self):
        """Whether this op holds its architecture logits (see `logits_from`)."""
        return self._logits_from is None

    @property
    def logits(self):
        return self._logits if self.owns_logits else self._logits_from.logits

    def build(self, input_shape):
        if self.owns_logits:
            self._logits = self.add_weight(name="arch_logits", shape=(len(self.candidates),),
                                           initializer=self.logits_initializer)
        elif not self._logits_from.built:
            raise ValueError(f"{self.name}: call {self._logits_from.name}, whose logits it "
                             "uses, first.")
        shapes = set()
        for candidate in self.candidates:
            if not candidate.built:
                candidate.build(input_shape)
            shapes.add(tuple(candidate.compute_output_shape(input_shape)[1:]))
        self.mixing_state = self.mixing.build_state(self)
        if len(shapes) != 1:
            raise ValueError(f"{self.name}: candidates produce different output shapes "
                             f"{sorted(shapes)}; a mixed op needs them equal.")

    @property
    def architecture_variables(self):
        return [self.logits] if self.owns_logits else []

    def probabilities(self):
        """The current categorical distribution over candidates (a tensor)."""
        return self.mixing.probabilities(self.logits)

    def call(self, inputs, training=None):
        # Rules that run one candidate have nothing to recompute and take no such argument.
        remat = ({"rematerialize": True}
                 if self.rematerialize and not self.mixing.partial_execution else {})
        return self.mixing.combine(self.logits, self.candidates, inputs, training=training,
                                   state=self.mixing_state, **remat)

    def compute_output_shape(self, input_shape):
        return (self.candidates[0].compute_output_shape(input_shape), (len(self.candidates),))

    def get_config(self):
        return {
            **super().get_config(),
            "candidates": [keras.saving.serialize_keras_object(c) for c in self.candidates],
            "mixing": keras.saving.serialize_keras_object(self.mixing),
            "choices": self.choices,
            "logits_initializer": keras.initializers.serialize(self.logits_initializer),
            "logits_from": None if self.owns_logits else self._logits_from.name,
            "rematerialize": self.rematerialize,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.pop("logits_from", None) is not None:
            raise ValueError(f"{config.get('name')} uses the logits of another MixedOp: rebuild "
                             "the supernet with its space's build_supernet and load its weights "
                             "(save_weights), not from a config.")
        config["candidates"] = [keras.saving.deserialize_keras_object(c)
                                for c in config["candidates"]]
        config["mixing"] = keras.saving.deserialize_keras_object(config["mixing"])
        return cls(**config)


def mixed_ops(model):
    """The `MixedOp` layers of `model`, in graph order."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)  # pylint: disable=protected-access
            if isinstance(layer, MixedOp)]


def distributions(ops_or_model):
    """`{block: (choice labels, probabilities as a float64 array)}` of the mixed ops of a
    model (or of a list of them) that own their logits, in graph order: what searches log
    and derive from."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    ops_ = ops_or_model if isinstance(ops_or_model, (list, tuple)) else mixed_ops(ops_or_model)
    return {op.name: (op.choices, np.asarray(ops.convert_to_numpy(op.probabilities()),
                                             "float64")) for op in ops_ if op.owns_logits}
