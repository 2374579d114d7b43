"""Cost models: the expected cost of a supernet as a differentiable function of its mixing weights."""

import numpy as np
from keras import ops

from tfnas.layers.mixed_op import mixed_ops
from tfnas.registry import Registry

COSTS = Registry("cost")


def count_parameters(model_or_variables):
    """Trainable parameters of a model or layer (or of a list of variables): the one
    parameter counter of tfnas."""
    variables = getattr(model_or_variables, "trainable_variables", model_or_variables)
    return int(sum(np.prod(v.shape) for v in variables))


class Cost:
    """Expected cost = fixed + sum over blocks of dot(w_block, table_block).

    `tables` maps each mixed op's name to the cost of each of its candidates.
    Subclasses fill the tables from a supernet (`from_supernet`); the call takes
    the `{block: weights}` that a supernet returns and gives a scalar tensor.
    """

    unit = ""

    def __init__(self, fixed, tables, labels=None):
        self.fixed = float(fixed)
        self.tables = {name: [float(v) for v in table] for name, table in tables.items()}
        # The choice of each table entry, to cost architectures given as {block: choice}.
        self.labels = labels
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

    def minimum(self):
        """The cost of the cheapest candidate at every block."""
        return self.fixed + sum(min(table) for table in self.tables.values())

    def of_choices(self, choices):
        """The cost of one architecture `{block: choice}`: the one way to cost an
        architecture (a latency prediction, a parameter or MAC count)."""
        return self.fixed + self.of_blocks({b: choices[b] for b in self.tables})

    def of_blocks(self, choices):
        """The cost of the blocks `choices` names, without the fixed part."""
        if self.labels is None:
            raise ValueError("This cost has no choice labels; build it with from_space, "
                             "from_supernet or from_table.")
        return sum(self.tables[b][self.labels[b].index(c)] for b, c in choices.items())


def tables_from_models(space, measure):
    """`(fixed, tables, labels)` measured on the space's derived models: model `i` takes
    candidate `i` at every block, and a layer counts (`measure(layer)`) for the block that
    `space.block_of_layer` names, or for the fixed part."""
    blocks = space.blocks()
    counts = {b: len(space.candidates(b)) for b in blocks}
    tables = {b: [0.0] * n for b, n in counts.items()}
    fixed = None
    for i in range(max(counts.values())):
        model = space.build_model({b: space.candidates(b)[min(i, counts[b] - 1)]
                                   for b in blocks})
        rest = 0
        for layer in model.layers:
            block = space.block_of_layer(layer.name)
            if block is None:
                rest += measure(layer)
            elif i < counts[block]:
                tables[block][i] += measure(layer)
        fixed = rest
    return fixed, tables, {b: space.candidates(b) for b in blocks}


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
        tables = {op.name: [count_parameters(c) for c in op.candidates] for op in ops_}
        in_ops = {id(v) for op in ops_ for v in op.trainable_variables}
        fixed = count_parameters([v for v in supernet.trainable_variables
                                  if id(v) not in in_ops])
        return cls(fixed, tables, {op.name: list(op.choices) for op in ops_})

    @classmethod
    def from_space(cls, space):
        """Counted on the space's derived models (`tables_from_models`): for spaces whose
        supernet's layers are not the derived network's (`costs_on_derived_models`)."""
        return cls(*tables_from_models(space, count_parameters))


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

        return cls(*tables_from_models(space, layer_macs))


class LatencyCost(Cost):
    """Expected latency under the mixing weights, from a latency table
    (`tfnas.deploy.latency`): predicted(arch) = `of_choices(arch)`.

    Example: `SearchModel(supernet, cost=LatencyCost.from_table(table, space, supernet))`.
    """

    unit = "ms"
    UNITS = {"ms": 1.0, "us": 1000.0}

    @classmethod
    def from_table(cls, table, space, supernet=None, unit="ms"):
        """`unit="us"` gives microseconds: `mul#log` needs costs above 1."""
        from tfnas.deploy import latency  # pylint: disable=import-outside-toplevel

        if unit not in cls.UNITS:
            raise latency.LatencyTableError(f"Unknown latency unit {unit!r}; use 'ms' or "
                                            "'us'.")
        table = latency.load_table(table)
        factor = cls.UNITS[unit]
        fixed, blocks = space.latency_ops()
        tables = {block: [factor * latency.op_ms(table, s) for s, _ in candidates]
                  for block, candidates in blocks.items()}
        if supernet is not None:
            names = {op.name for op in mixed_ops(supernet)}
            if names != set(tables):
                raise latency.LatencyTableError(f"The supernet's blocks {sorted(names)} are "
                                                f"not the space's {sorted(tables)}.")
        cost = cls(factor * latency.fixed_ms(table, fixed), tables,
                   {b: space.candidates(b) for b in blocks})
        cost.unit = unit
        return cost


class MemoryCost(Cost):
    """Bytes of model memory: parameters times `bytes_per_parameter` (4 for float32
    weights, 1 for int8)."""

    unit = "bytes"

    @classmethod
    def from_parameters(cls, parameters, bytes_per_parameter=4):
        b = float(bytes_per_parameter)
        if b <= 0:
            raise ValueError(f"bytes_per_parameter must be positive, got {bytes_per_parameter}.")
        return cls(parameters.fixed * b, {k: [v * b for v in t]
                                          for k, t in parameters.tables.items()},
                   parameters.labels)


# What `search.cost` names. A search builds its cost with the space and the supernet.
@COSTS.register("parameters")
def _parameters(space, supernet=None):
    if space.costs_on_derived_models:
        return ParameterCost.from_space(space)
    return ParameterCost.from_supernet(supernet or space.build_supernet("softmax"))


@COSTS.register("memory")
def _memory(space, supernet=None, bytes_per_parameter=4):
    return MemoryCost.from_parameters(_parameters(space, supernet), bytes_per_parameter)


@COSTS.register("macs")
def _macs(space, supernet=None):
    del supernet
    return MacsCost.from_space(space)


@COSTS.register("latency")
def _latency(table, space, supernet=None, unit="ms"):
    return LatencyCost.from_table(table, space, supernet, unit=unit)
