"""Cost models: the expected cost of a supernet as a differentiable function of its mixing weights."""

import numpy as np
from keras import ops

from tfnas.layers import MixedOp


def mixed_ops(model):
    """The `MixedOp` layers of `model`, in graph order."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, MixedOp)]


def count_trainable(variables):
    return int(sum(np.prod(v.shape) for v in variables))


class Cost:
    """Expected cost = fixed + sum over blocks of dot(w_block, table_block).

    `tables` maps each mixed op's name to the cost of each of its candidates.
    Subclasses fill the tables from a supernet (`from_supernet`); the call takes
    the `{block: weights}` that a supernet returns and gives a scalar tensor.
    """

    unit = ""

    def __init__(self, fixed, tables):
        self.fixed = float(fixed)
        self.tables = {name: [float(v) for v in table] for name, table in tables.items()}
        self._tensors = {name: ops.convert_to_tensor(np.asarray(t, "float32"))
                         for name, t in self.tables.items()}

    def __call__(self, mixing_weights):
        missing = sorted(set(self.tables) - set(mixing_weights))
        if missing:
            raise ValueError(f"No mixing weights for blocks {missing} of the cost model.")
        total = ops.convert_to_tensor(self.fixed, "float32")
        for name, table in self._tensors.items():
            total = total + ops.sum(ops.cast(mixing_weights[name], "float32") * table)
        return total

    def of_choices(self, indices):
        """The cost of one architecture given as `{block: candidate index}`."""
        return self.fixed + sum(self.tables[b][i] for b, i in indices.items())


class ParameterCost(Cost):
    """Trainable parameters, counted from the real layers (BN counts gamma and beta).

    Example:

    >>> from tfnas.spaces import get_space
    >>> cost = ParameterCost.from_supernet(get_space("grunas").build_supernet())
    >>> cost.tables["unit_1"]
    [234.0, 198.0, 186.0, 180.0, 174.0]
    """

    unit = "parameters"

    @classmethod
    def from_supernet(cls, supernet):
        ops_ = mixed_ops(supernet)
        tables = {op.name: [count_trainable(c.trainable_variables) for c in op.candidates]
                  for op in ops_}
        in_ops = {id(v) for op in ops_ for v in op.trainable_variables}
        fixed = count_trainable(v for v in supernet.trainable_variables if id(v) not in in_ops)
        return cls(fixed, tables)


class MacsCost(Cost):
    """Multiply-accumulates of one forward pass, counted on the space's derived models.

    The tables come from `n` derived models (model `i` takes candidate `i` at
    every block): a layer named `<block>_...` counts for that block's
    candidate, every other layer for the fixed part. Search spaces name the
    layers of their blocks that way.

    Example:

    >>> from tfnas.spaces import get_space
    >>> cost = MacsCost.from_space(get_space("grunas"))
    >>> cost.tables["unit_1"][0] > cost.tables["unit_1"][-1]
    True
    """

    unit = "MACs"

    @classmethod
    def from_space(cls, space):
        from tfnas.macs import layer_macs  # pylint: disable=import-outside-toplevel

        blocks = space.blocks()
        counts = {b: len(space.candidates(b)) for b in blocks}
        tables = {b: [0.0] * n for b, n in counts.items()}
        fixed = None
        for i in range(max(counts.values())):
            choices = {b: space.candidates(b)[min(i, counts[b] - 1)] for b in blocks}
            model = space.build_model(choices)
            rest = 0
            for layer in model.layers:
                block = next((b for b in blocks if layer.name.startswith(f"{b}_")), None)
                if block is None:
                    rest += layer_macs(layer)
                elif i < counts[block]:
                    tables[block][i] += layer_macs(layer)
            fixed = rest
        return cls(fixed, tables)
