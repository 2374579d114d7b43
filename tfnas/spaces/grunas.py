"""GRUNAS: the group count of every grouped convolution of a ShuffleNet-style network.

Seo et al., "Achieving an optimal group structure in a neural architecture
search", Electronics Letters 2022. Layout from the reference code's CIFAR-10 log
(as the GRUNAS code, github minercode625/grunas, builds it): a stride-2 stem and ten
stride-1 units at 18x18.
"""

import keras

import types

from tfnas.layers import GrunasUnit, MixedOp
from tfnas.layers.grunas_unit import (apply_unit, keras_layer_set, supernet_layer_set,
                                      unit_layers)
from tfnas.layers import mixing as mixing_rules
from tfnas.spaces.base import SearchSpace, SearchSpaceError, register_space

PAPER_WIDTHS = [[12, 24], [24, 24], [24, 48], [48, 48], [48, 96], [96, 96], [96, 192],
                [192, 192], [192, 384], [384, 384]]
PAPER_CANDIDATES = [1, 2, 3, 4, 6]
CODE_CANDIDATES = [1, 2, 3, 4]
CIFAR_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR_STD = [0.2023, 0.1994, 0.2010]

# Layers shared by the supernet and every derived model, by name.
SHARED_LAYERS = ("stem_conv", "stem_bn", "classifier")
UNIT_WEIGHTED_SUBLAYERS = ("pw", "pw_bn", "dw", "gconv", "gconv_bn")


@register_space
class GrunasSpace(SearchSpace):
    """Group counts of the ten units; the candidates default to the paper's {1,2,3,4,6}.

    Models take float images with pixel values in [0, 255] and normalize them
    inside (mean and std given on the [0, 1] scale, as in torchvision).

    Example:

    >>> space = GrunasSpace()
    >>> model = space.build_model(dict(zip(space.blocks(), [4, 1, 1, 2, 2, 3, 2, 4, 4, 6])))
    >>> sum(int(w.numpy().size) for w in model.trainable_weights)
    162430
    """

    name = "grunas"
    tfmot_layer_set = True
    defaults = {
        "num_classes": 10,
        "input_shape": [32, 32, 3],
        "stem_channels": 12,
        "widths": PAPER_WIDTHS,
        "candidates": PAPER_CANDIDATES,
        "mean": CIFAR_MEAN,
        "std": CIFAR_STD,
    }

    def __init__(self, **config):
        super().__init__(**config)
        c = self.config
        widths = c["widths"]
        if not isinstance(widths, list) or not all(
                isinstance(w, (list, tuple)) and len(w) == 2
                and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in w)
                for w in widths):
            raise SearchSpaceError(f"grunas: 'widths' must be a list of [in, out] channel "
                                   f"pairs of positive integers, got {widths!r}.")
        widths = [list(w) for w in widths]
        if not widths:
            raise SearchSpaceError("grunas: 'widths' must list at least one [in, out] pair.")
        expected_in = int(c["stem_channels"])
        for i, (cin, cout) in enumerate(widths, start=1):
            if cin != expected_in:
                raise SearchSpaceError(f"grunas: unit_{i} takes {cin} channels but the layer "
                                       f"before it gives {expected_in}.")
            expected_in = cout
        for g in c["candidates"]:
            for i, (cin, cout) in enumerate(widths, start=1):
                if not isinstance(g, int) or g < 1 or cout % g or cin // 2 < g:
                    raise SearchSpaceError(
                        f"grunas: group count {g!r} cannot be used in unit_{i} "
                        f"({cin}->{cout} channels): its channel shuffle needs a group count "
                        f"that divides {cout}, and at most {cin // 2}. Remove {g!r} from "
                        "'candidates' or change 'widths'.")
        self.widths = widths

    def blocks(self):
        return [f"unit_{i}" for i in range(1, len(self.widths) + 1)]

    def candidates(self, block):
        return list(self.config["candidates"])

    def _stem(self, inputs, L=None):
        L = L or keras_layer_set()
        mean, std = self.config["mean"], self.config["std"]
        x = L.Normalization(mean=[255.0 * m for m in mean],
                            variance=[(255.0 * s) ** 2 for s in std], name="normalize")(inputs)
        x = L.ZeroPadding2D(3, name="stem_pad")(x)
        x = L.Conv2D(self.config["stem_channels"], 3, strides=2, use_bias=True,
                     name="stem_conv")(x)
        x = L.BatchNormalization(momentum=0.9, epsilon=1e-5, name="stem_bn")(x)
        return L.ReLU(name="stem_relu")(x)

    def _head(self, x, L=None):
        L = L or keras_layer_set()
        x = L.GlobalAveragePooling2D(name="pool")(x)
        return L.Dense(self.config["num_classes"], name="classifier")(x)

    def build_supernet(self, mixing="gumbel"):
        rule = mixing_rules.get(mixing)
        inputs = keras.Input(tuple(self.config["input_shape"]), name="image")
        x = self._stem(inputs, supernet_layer_set())
        weights = {}
        for block, (cin, cout) in zip(self.blocks(), self.widths):
            op = MixedOp([GrunasUnit(cin, cout, g, name=f"{block}_g{g}")
                          for g in self.candidates(block)],
                         mixing=rule, choices=self.candidates(block), name=block)
            x, weights[block] = op(x)
        return keras.Model(inputs, (self._head(x), weights), name="grunas_supernet")

    def build_model(self, choices, name=None, layer_set=None, fold_batch_norms=False):
        """The derived network; `layer_set` swaps the framework (default Keras 3).

        `fold_batch_norms` builds the inference form whose grouped convolutions
        carry the following BatchNorm (see `tfnas.deploy.lowering`).
        """
        self.validate_choices(choices)
        L = layer_set or keras_layer_set()
        inputs = L.Input(tuple(self.config["input_shape"]), name="image")
        x = self._stem(inputs, L)
        for block, (cin, cout) in zip(self.blocks(), self.widths):
            layers = types.SimpleNamespace(**unit_layers(L, block, cin, cout, choices[block],
                                                         fold_batch_norms))
            x = apply_unit(layers, x)
        return L.Model(inputs, self._head(x, L), name=name or "grunas")

    def inherit_weights(self, model, supernet, choices):
        for layer_name in SHARED_LAYERS:
            model.get_layer(layer_name).set_weights(supernet.get_layer(layer_name).get_weights())
        for block in self.blocks():
            op = supernet.get_layer(block)
            unit = op.candidates[op.choices.index(choices[block])]
            for attr in UNIT_WEIGHTED_SUBLAYERS:
                model.get_layer(f"{block}_{attr}").set_weights(getattr(unit, attr).get_weights())

    def _spatial(self):
        h, w, c = self.config["input_shape"]
        return (h + 6 - 3) // 2 + 1, (w + 6 - 3) // 2 + 1, c

    def latency_ops(self):
        h, w, c = self._spatial()
        H, W, _ = self.config["input_shape"]
        stem, classes = self.config["stem_channels"], self.config["num_classes"]
        last = self.widths[-1][1]

        def stem_model():
            inputs = keras.Input((H, W, c))
            return keras.Model(inputs, self._stem(inputs))

        def head_model():
            inputs = keras.Input((h, w, last))
            return keras.Model(inputs, self._head(inputs))

        def unit_model(cin, cout, g):
            def build():
                inputs = keras.Input((h, w, cin))
                layers = types.SimpleNamespace(
                    **unit_layers(keras_layer_set(), "unit", cin, cout, g))
                return keras.Model(inputs, apply_unit(layers, inputs))
            return build

        fixed = [(f"grunas_stem-input:{H}x{W}x{c}-output:{h}x{w}x{stem}", stem_model),
                 (f"grunas_head-input:{h}x{w}x{last}-classes:{classes}", head_model)]
        blocks = {
            block: [(f"grunas_unit-input:{h}x{w}x{cin}-output:{h}x{w}x{cout}-groups:{g}",
                     unit_model(cin, cout, g)) for g in self.candidates(block)]
            for block, (cin, cout) in zip(self.blocks(), self.widths)}
        return fixed, blocks
