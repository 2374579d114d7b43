"""A supernet whose path is chosen from outside: ENAS's weight sharing.

Pham et al., "Efficient Neural Architecture Search via Parameter Sharing",
ICML 2018: one set of weights for every architecture of the space; each
training step runs the architecture the controller sampled. Here the chosen
candidate of each `MixedOp` is an integer variable (`set_path`), and the op
runs only that candidate (`run_candidate`, a graph `Case`): a traced training step serves
every architecture without retracing, and candidates that did not run keep
their weights and optimizer slots (`partial_execution`, as `SearchModel` holds
them).
"""

import keras
from keras import ops

from tfnas.layers.mixed_op import mixed_ops
from tfnas.layers.mixing import RULES, MixingRule, run_candidate


@keras.saving.register_keras_serializable(package="tfnas")
class ChosenPathMixing(MixingRule):
    """Runs the candidate `set_path` chose, in training and inference alike; its mixing
    weights (for a cost) are the one-hot of that choice. The architecture logits are not
    used: the choice comes from outside (the ENAS controller).

    Args:
        reproducible: run the chosen candidate as one function call instead of the
            faster lowered switch (default; see `run_candidate`).

    Example:

    >>> from tfnas.layers import MixedOp
    >>> op = MixedOp([keras.layers.Dense(2), keras.layers.Dense(2)], mixing=ChosenPathMixing())
    >>> _ = op(keras.ops.ones((1, 3)))
    >>> set_path([op], {op.name: 1})
    >>> keras.ops.convert_to_numpy(op(keras.ops.ones((1, 3)))[1]).tolist()
    [0.0, 1.0]
    """

    partial_execution = True
    learns_architecture = False

    def __init__(self, reproducible=False, **kwargs):
        super().__init__(**kwargs)
        self.reproducible = bool(reproducible)

    def build_state(self, op):
        return {"executed": op.add_weight(name="chosen_path", shape=(), dtype="int32",
                                          initializer="zeros", trainable=False)}

    def mixing_weights(self, logits, training=None):
        return ops.softmax(logits)

    def combine(self, logits, candidates, inputs, training=None, state=None):
        index = state["executed"]
        outputs = run_candidate(index, candidates, inputs, training, self.reproducible)
        return outputs, ops.one_hot(index, len(candidates))

    def get_config(self):
        return {**super().get_config(), "reproducible": self.reproducible}


def set_path(ops_or_model, choices):
    """Sets the candidate each `MixedOp` runs: `choices` maps op names to choice labels (the
    op's `choices`) — a `{block: choice}` architecture of the space. An op that shares
    another's logits (`logits_from`: the cells of a kind share one architecture) runs that
    op's choice unless `choices` names it too."""
    found = ops_or_model if isinstance(ops_or_model, (list, tuple)) else mixed_ops(ops_or_model)
    for op in found:
        name = op.name
        if name not in choices and not op.owns_logits:
            name = op._logits_from.name  # pylint: disable=protected-access
        if name not in choices:
            raise ValueError(f"set_path: no choice for {op.name!r}; the architecture names "
                             f"{sorted(choices)}.")
        if choices[name] not in op.choices:
            raise ValueError(f"set_path: {choices[name]!r} is not a choice of {op.name!r} "
                             f"({op.choices}).")
        op.mixing_state["executed"].assign(op.choices.index(choices[name]))


@RULES.register("chosen")
def _chosen(reproducible=False, seed=None):
    del seed  # nothing random: the path is set from outside
    return ChosenPathMixing(reproducible=reproducible, name="mixing")
