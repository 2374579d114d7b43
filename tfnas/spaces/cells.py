"""What the ENAS-style cell spaces share: one normal and one reduction cell for the whole
network, three stages of normal layers with a reduction layer between them, and a
weight-sharing supernet whose path is chosen from outside (`search.method: "enas"`)."""

import keras

from tfnas.layers import mixing as mixing_rules
from tfnas.layers.chosen_path import ChosenPathMixing
from tfnas.layers.mixed_op import MixedOp
from tfnas.spaces.base import SearchSpace, SearchSpaceError

CIFAR_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR_STD = [0.2470, 0.2435, 0.2616]


def normalize(inputs, config):
    """Images in [0, 255], normalized inside the model by the space's `mean` and `std`."""
    return keras.layers.Normalization(mean=[255.0 * m for m in config["mean"]],
                                      variance=[(255.0 * s) ** 2 for s in config["std"]],
                                      name="normalize")(inputs)


def keras3_only(space, layer_set):
    """Cell spaces build Keras 3 models only: their QAT is the native one."""
    if layer_set is not None:
        raise SearchSpaceError(f"{space.name} builds Keras 3 models only (its QAT is the "
                               "native one, export.qat_backend: \"native\").")


def check_positive_integers(space, keys):
    """Raises `SearchSpaceError` unless the space's settings `keys` are positive integers."""
    for key in keys:
        value = space.config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SearchSpaceError(f"{space.name}: {key} must be a positive integer, got "
                                   f"{value!r}.")


def no_latency_table(space):
    raise SearchSpaceError(f"{space.name} has no latency table yet; time whole networks with "
                           "tfnas benchmark.")


def shared_mixed_op(owners, block, cell_name, make_candidates, rule, choices):
    """The `MixedOp` of `block` in cell `cell_name` of a supernet whose cells of a kind share
    one architecture: the first one is named by the block and owns the logits (`owners`
    records it), later ones are `<cell_name>_<block>` and use them. `make_candidates(name)`
    gives the candidates of the op named `name`."""
    name = f"{cell_name}_{block}" if block in owners else block
    op = MixedOp(make_candidates(name), mixing=rule, choices=choices,
                 logits_from=owners.get(block), name=name)
    owners.setdefault(block, op)
    return op


class CellSpace(SearchSpace):
    """Base of the cell spaces. Subclasses build `_network(cell, inputs)` from a cell
    function, given by `_cell(choices)` (derived) or `_supernet_cell(rule, weights)`, and
    name in `positive_keys` the integer settings and in `why_even` why filters are even."""

    positive_keys = ("filters", "cells_per_stage")
    why_even = ""

    def __init__(self, **config):
        super().__init__(**config)
        c = self.config
        check_positive_integers(self, self.positive_keys)
        if c["filters"] % 2:
            raise SearchSpaceError(f"{self.name}: filters={c['filters']} must be even: "
                                   f"{self.why_even}.")

    def _layers(self):
        """`(kind, name)` of the network's cell layers, in order."""
        for stage in range(3):
            if stage:
                yield "reduce", f"reduce{stage}"
            for k in range(self.config["cells_per_stage"]):
                yield "normal", f"stage{stage + 1}_cell{k + 1}"

    @staticmethod
    def _mixed(rule, weights, candidates, choices, name, x):
        """A supernet choice: `MixedOp` `name` over `candidates`, applied to `x`; its mixing
        weights go to `weights[name]`."""
        y, weights[name] = MixedOp(candidates, mixing=rule, choices=choices, name=name)(x)
        return y

    def _normalize(self, inputs):
        return normalize(inputs, self.config)

    def build_model(self, choices, name=None, layer_set=None, fold_batch_norms=False):
        keras3_only(self, layer_set)
        del fold_batch_norms  # folding is deploy's (tfnas.deploy.quantize / lowering)
        self.validate_choices(choices)
        inputs = keras.Input(tuple(self.config["input_shape"]), name="images")
        return keras.Model(inputs, self._network(self._cell(choices), inputs),
                           name=name or self.name)

    def build_supernet(self, mixing="chosen"):
        """The weight-sharing network of ENAS (`search.method: "enas"`): one cell
        architecture holds for every layer, so the path is set from outside
        (`supernet_path`); differentiable rules would need logits shared across layers."""
        rule = mixing_rules.get(mixing)
        if not isinstance(rule, ChosenPathMixing):
            raise SearchSpaceError(
                f"{self.name}'s supernet runs one cell architecture in every layer, chosen "
                f"from outside: it takes the \"chosen\" rule of search.method \"enas\", not "
                f"{type(rule).__name__}. Search it with method \"enas\", or \"tuner\" (a "
                "network per trial).")
        inputs = keras.Input(tuple(self.config["input_shape"]), name="images")
        weights = {}
        logits = self._network(self._supernet_cell(rule, weights), inputs)
        return keras.Model(inputs, (logits, weights), name=f"{self.name}_supernet")

    def latency_ops(self):
        no_latency_table(self)
