"""Spaces whose architecture is one width per channel group of a baseline network.

Compaction methods start from a trained baseline and choose how many channels
each channel group (`tfnas.compaction.channel_groups`) keeps. The
architecture document records those widths; `build_model` builds the
baseline with them (fresh weights), and channel surgery
(`tfnas.compaction.surgery.resize`) gives the same network with the
baseline's surviving weights.
"""

import os

import keras
import numpy as np

from tfnas.compaction.channel_groups import channel_graph
from tfnas.compaction.surgery import with_widths
from tfnas.spaces.base import SearchSpace, SearchSpaceError, register_space


class WidthSpace(SearchSpace):
    """A baseline network's channel widths. Subclasses implement `build_baseline`.

    Blocks are the baseline's channel groups that do not reach its input or
    output, named after their first producer; a block's candidates are the
    widths 1 ... `max_multiplier` x its baseline width.
    """

    def build_baseline(self, name=None):
        """The baseline network, a functional Keras model."""
        raise NotImplementedError

    def _groups(self):
        if not hasattr(self, "_group_cache"):
            self._group_cache = [g for g in channel_graph(self.build_baseline()).groups()
                                 if not g.fixed]
        return self._group_cache

    def baseline_widths(self):
        """`{block: its width in the baseline}`."""
        return {g.name: g.width for g in self._groups()}

    def blocks(self):
        return [g.name for g in self._groups()]

    def candidates(self, block):
        width = self.baseline_widths()[block]
        return list(range(1, int(width * self.config.get("max_multiplier", 1.0)) + 1))

    def validate_choice(self, block, choice):
        top = self.candidates(block)[-1]
        if isinstance(choice, bool) or not isinstance(choice, int) or not 1 <= choice <= top:
            raise SearchSpaceError(f"Block {block!r}: width {choice!r} is not an integer in "
                                   f"1 ... {top}.")

    def build_model(self, choices, name=None, layer_set=None, fold_batch_norms=False):
        if layer_set is not None:
            raise SearchSpaceError(f"Search space {self.name!r} builds Keras 3 models only; "
                                   "use export.qat_backend 'native'.")
        del fold_batch_norms
        self.validate_choices(choices)
        baseline = self.build_baseline(name=name)
        widths = {}
        for group in self._groups():
            if any(len(c) != len(group.producers) for c in group.channels):
                raise SearchSpaceError(
                    f"Channel group {group.name!r} is joined by a concatenation; its width "
                    "can only be set by keeping channels (tfnas.compaction.surgery.resize).")
            for producer in group.producers:
                widths[producer] = choices[group.name]

        return with_widths(baseline, widths)

    def build_supernet(self, mixing="gumbel"):
        raise SearchSpaceError(f"Search space {self.name!r} is a baseline's widths, searched "
                               "by compaction (search.method 'compaction'), not a supernet.")

    def inherit_weights(self, model, supernet, choices):
        raise SearchSpaceError(f"Search space {self.name!r} has no supernet to inherit from.")

    def latency_ops(self):
        raise SearchSpaceError(f"Search space {self.name!r} has no per-block latency table; "
                               "its networks are timed whole (tfnas benchmark).")


@register_space
class KerasModelSpace(WidthSpace):
    """The channel widths of any functional Keras model saved as a `.keras` file (`path`),
    made of the layers the channel-group walk follows.

    The baseline is the file's network with fresh weights (so a search can train it);
    to start from the file's trained weights, give the same path as
    `search.baseline_weights`. `num_classes` and `input_shape` are the model's; a run on
    data that does not fit it is refused.
    """

    name = "keras_model"
    defaults = {"path": None, "num_classes": None, "input_shape": None, "max_multiplier": 1.0}

    def __init__(self, **config):
        super().__init__(**config)
        path = self.config["path"]
        if not isinstance(path, str) or not os.path.isfile(path):
            raise SearchSpaceError(f"space.config.path: {path!r} is not a file; give the "
                                   "baseline as a .keras file (model.save('baseline.keras')).")
        model = self._load()
        found = {"num_classes": int(model.output.shape[-1]),
                 "input_shape": [int(n) for n in model.input.shape[1:]]}
        for key, value in found.items():
            given = self.config[key]
            if given is not None and list(np.atleast_1d(given)) != list(np.atleast_1d(value)):
                raise SearchSpaceError(f"The model in {path} has {key} {value}, the run asks "
                                       f"for {given}; train it on data that fits it.")
            self.config[key] = value

    def _load(self):
        try:
            return keras.saving.load_model(self.config["path"], compile=False)
        except Exception as err:  # pylint: disable=broad-except
            raise SearchSpaceError(f"Cannot load the baseline {self.config['path']} "
                                   f"({type(err).__name__}: {str(err)[:200]}).") from None

    def build_baseline(self, name=None):
        model = keras.models.clone_model(self._load())
        if name:
            model.name = name
        return model
