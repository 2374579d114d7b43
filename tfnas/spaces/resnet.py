"""ResNet-50 with search unit blocks inside a search scope (PResNet-50).

Search-space adaptation (*Search Space Adaptation for Differentiable Neural Architecture
Search in Image Classification*, over ProxylessNAS's binary gates): the base network is
torchvision's ResNet-50 (bottlenecks [3, 4, 6, 3], stride in the 3x3 conv, no
conv biases); a *search unit block* is a bottleneck whose 3x3 conv (+BN+ReLU)
becomes a choice of kernel {3, 5} x activation {ReLU, LeakyReLU, Mish}; the
*search scope* replaces bottlenecks by search unit blocks from the deepest
stage outward: s = stage 4 (3 blocks), m = stages 3-4 (9), l = 2-4 (13),
f = all 16.
"""

import types

import keras

from tfnas.layers import FusedBatchNormalization, MixedOp
from tfnas.layers import mixing as mixing_rules
from tfnas.spaces.base import SearchSpace, SearchSpaceError, _did_you_mean, register_space

SCOPES = {"s": 1, "m": 2, "l": 3, "f": 4}  # how many stages, counted from the deepest
ACTIVATIONS = ("relu", "leaky_relu", "mish")
STEMS = ("imagenet", "cifar")
BASE_PLANES = (64, 128, 256, 512)
EXPANSION = 4
CIFAR_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR_STD = [0.2023, 0.1994, 0.2010]


def keras_layer_set():
    """The layer classes a ResNet is made of, from Keras 3 (`layer_set=` swaps them)."""
    L = keras.layers
    return types.SimpleNamespace(
        Conv2D=L.Conv2D, BatchNormalization=L.BatchNormalization, ReLU=L.ReLU,
        LeakyReLU=lambda negative_slope, name: L.LeakyReLU(negative_slope=negative_slope,
                                                           name=name),
        Activation=L.Activation, Add=L.Add, ZeroPadding2D=L.ZeroPadding2D,
        MaxPooling2D=L.MaxPooling2D, Normalization=L.Normalization,
        GlobalAveragePooling2D=L.GlobalAveragePooling2D, Dense=L.Dense, Input=keras.Input,
        Model=keras.Model)


def supernet_layer_set():
    """`keras_layer_set()` with `FusedBatchNormalization`: the supernet trains with the
    fused kernel (a smaller traced step) and keeps the variables the derived network's
    built-in batch norms inherit."""
    return types.SimpleNamespace(**{**vars(keras_layer_set()),
                                    "BatchNormalization": FusedBatchNormalization})


def strided(size, stride):
    """Spatial size after a conv with padding k // 2 (or a 1x1 conv) at `stride`."""
    return tuple((n - 1) // stride + 1 for n in size)


def choice_label(kernel, activation):
    """`(5, "mish")` -> `"k5_mish"`, the JSON label of a candidate."""
    return f"k{kernel}_{activation}"


def parse_choice(label):
    """`"k5_mish"` -> `(5, "mish")`; raises `SearchSpaceError` on other strings."""
    kernel, _, activation = str(label).partition("_")
    if not (kernel[:1] == "k" and kernel[1:].isdigit() and activation):
        raise SearchSpaceError(f"{label!r} is not a search unit choice; write "
                               "'k<kernel>_<activation>', e.g. 'k3_relu' or 'k5_mish'.")
    return int(kernel[1:]), activation


@register_space
class ResNet50Space(SearchSpace):
    """ResNet-50 whose bottlenecks inside `scope` choose their middle conv.

    Models take float images in [0, 255] and normalize them inside. The
    `imagenet` stem is torchvision's (7x7 stride-2 conv and 3x3 stride-2 max
    pool); the `cifar` stem is a 3x3 stride-1 conv without pooling.
    `width_multiplier` scales every channel count (stem and planes) so a
    scaled-down network can be searched on a CPU; `depths` sets the
    bottlenecks per stage. LeakyReLU uses PyTorch's slope, 0.01.

    Example:

    >>> space = ResNet50Space(scope="m")
    >>> len(space.blocks()), space.blocks()[0], space.candidates("layer4_2")[-1]
    (9, 'layer3_0', 'k5_mish')
    >>> model = space.build_model({b: "k3_relu" for b in space.blocks()})
    >>> sum(int(w.numpy().size) for w in model.trainable_weights)
    23528522
    """

    name = "resnet50"
    defaults = {
        "num_classes": 10,
        "input_shape": [32, 32, 3],
        "stem": "imagenet",
        "scope": "s",
        "kernels": [3, 5],
        "activations": list(ACTIVATIONS),
        "width_multiplier": 1.0,
        "depths": [3, 4, 6, 3],
        "leaky_relu_slope": 0.01,
        "mean": CIFAR_MEAN,
        "std": CIFAR_STD,
    }

    def __init__(self, **config):
        super().__init__(**config)
        c = self.config
        if c["scope"] not in SCOPES:
            raise SearchSpaceError(
                f"resnet50: unknown search scope {c['scope']!r}; choose one of "
                "'s' (stage 4), 'm' (stages 3-4), 'l' (stages 2-4), 'f' (all stages)."
                + _did_you_mean(c["scope"], SCOPES))
        if c["stem"] not in STEMS:
            raise SearchSpaceError(f"resnet50: unknown stem {c['stem']!r}; choose one of "
                                   f"{list(STEMS)}.")
        if not c["kernels"] or any(not isinstance(k, int) or k < 1 or k % 2 == 0
                                   for k in c["kernels"]):
            raise SearchSpaceError(f"resnet50: kernels must be odd positive integers (padding "
                                   f"k // 2 keeps the size), got {c['kernels']!r}.")
        unknown = [a for a in c["activations"] if a not in ACTIVATIONS]
        if unknown or not c["activations"]:
            raise SearchSpaceError(f"resnet50: unknown activations {unknown}; choose from "
                                   f"{list(ACTIVATIONS)}.")
        if len(set(c["kernels"])) * len(set(c["activations"])) < 2:
            raise SearchSpaceError("resnet50: the kernels and activations give fewer than two "
                                   "candidates; nothing to search.")
        if len(c["depths"]) != 4 or any(not isinstance(d, int) or d < 1 for d in c["depths"]):
            raise SearchSpaceError(f"resnet50: depths must be four positive integers, got "
                                   f"{c['depths']!r}.")
        if not c["width_multiplier"] > 0:
            raise SearchSpaceError(f"resnet50: width_multiplier must be positive, got "
                                   f"{c['width_multiplier']!r}.")
        self.planes = [max(1, round(p * c["width_multiplier"])) for p in BASE_PLANES]
        self.stem_channels = self.planes[0]
        self._candidates = [choice_label(k, a) for k in c["kernels"] for a in c["activations"]]

    # -- structure -------------------------------------------------------------------------

    def layout(self):
        """`[(name, stage, inplanes, planes, stride, (h, w) of the input)]` for all bottlenecks."""
        h, w = self._stem_output()
        inplanes, rows = self.stem_channels, []
        for stage, (planes, depth) in enumerate(zip(self.planes, self.config["depths"])):
            for i in range(depth):
                stride = 2 if stage > 0 and i == 0 else 1
                rows.append((f"layer{stage + 1}_{i}", stage, inplanes, planes, stride, (h, w)))
                h, w = strided((h, w), stride)
                inplanes = planes * EXPANSION
        return rows

    def _stem_output(self):
        h, w = self.config["input_shape"][:2]
        if self.config["stem"] == "cifar":
            return h, w
        h, w = (h + 6 - 7) // 2 + 1, (w + 6 - 7) // 2 + 1
        return (h + 2 - 3) // 2 + 1, (w + 2 - 3) // 2 + 1

    def blocks(self):
        first = 4 - SCOPES[self.config["scope"]]
        return [row[0] for row in self.layout() if row[1] >= first]

    def candidates(self, block):
        return list(self._candidates)

    def validate_choice(self, block, choice):
        kernel, activation = parse_choice(choice)
        if kernel not in self.config["kernels"]:
            raise SearchSpaceError(f"Block {block!r}: kernel {kernel} is not in this space's "
                                   f"kernels {self.config['kernels']}.")
        if activation not in self.config["activations"]:
            raise SearchSpaceError(f"Block {block!r}: activation {activation!r} is not in this "
                                   f"space's activations {self.config['activations']}.")

    # -- layers ----------------------------------------------------------------------------

    def _activation(self, L, activation, name):
        if activation == "relu":
            return L.ReLU(name=name)
        if activation == "leaky_relu":
            return L.LeakyReLU(self.config["leaky_relu_slope"], name)
        return L.Activation(activation, name=name)

    def _conv_bn(self, L, filters, kernel, stride, name):
        layers = [L.ZeroPadding2D(kernel // 2, name=f"{name}_pad")] if kernel > 1 else []
        return layers + [
            L.Conv2D(filters, kernel, strides=stride, use_bias=False, name=f"{name}_conv"),
            L.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")]

    def _middle(self, L, prefix, width, stride, choice):
        """The middle conv, BN and activation of a bottleneck, as a list of layers."""
        kernel, activation = parse_choice(choice)
        layers = self._conv_bn(L, width, kernel, stride, f"{prefix}_2")
        return layers + [self._activation(L, activation, f"{prefix}_2_act")]

    def _bottleneck(self, L, x, name, inplanes, planes, stride, middle):
        apply = self._apply
        y = apply(self._conv_bn(L, planes, 1, 1, f"{name}_1"), x)
        y = L.ReLU(name=f"{name}_1_relu")(y)
        y = middle(y)
        y = apply(self._conv_bn(L, planes * EXPANSION, 1, 1, f"{name}_3"), y)
        shortcut = x
        if stride != 1 or inplanes != planes * EXPANSION:
            shortcut = apply(self._conv_bn(L, planes * EXPANSION, 1, stride,
                                           f"{name}_downsample"), x)
        y = L.Add(name=f"{name}_add")([y, shortcut])
        return L.ReLU(name=f"{name}_out")(y)

    def _stem(self, L, inputs):
        mean, std = self.config["mean"], self.config["std"]
        x = L.Normalization(mean=[255.0 * m for m in mean],
                            variance=[(255.0 * s) ** 2 for s in std], name="normalize")(inputs)
        kernel, stride = (7, 2) if self.config["stem"] == "imagenet" else (3, 1)
        x = self._apply(self._conv_bn(L, self.stem_channels, kernel, stride, "stem"), x)
        x = L.ReLU(name="stem_relu")(x)
        if self.config["stem"] == "imagenet":
            # Zero padding equals torchvision's -inf padding here: inputs are >= 0 after ReLU.
            x = L.ZeroPadding2D(1, name="stem_pool_pad")(x)
            x = L.MaxPooling2D(3, strides=2, name="stem_pool")(x)
        return x

    def _head(self, L, x):
        x = L.GlobalAveragePooling2D(name="pool")(x)
        return L.Dense(self.config["num_classes"], name="classifier")(x)

    def _network(self, L, middle_of):
        inputs = L.Input(tuple(self.config["input_shape"]), name="image")
        x = self._stem(L, inputs)
        for name, _, inplanes, planes, stride, _ in self.layout():
            x = self._bottleneck(L, x, name, inplanes, planes, stride,
                                 middle_of(name, planes, stride))
        return inputs, self._head(L, x)

    def build_supernet(self, mixing="binary"):
        """`x -> (logits, {block: probabilities})`; binary gates by default (ProxylessNAS)."""
        rule = mixing_rules.get(mixing)
        L = supernet_layer_set()
        weights = {}
        search = set(self.blocks())

        def middle_of(name, planes, stride):
            if name not in search:
                return lambda y: self._apply(self._middle(L, name, planes, stride, "k3_relu"), y)
            candidates = [keras.Sequential(self._middle(L, name, planes, stride, c),
                                           name=f"{name}_{c}") for c in self.candidates(name)]
            op = MixedOp(candidates, mixing=rule, choices=self.candidates(name), name=name)

            def apply(y):
                y, weights[name] = op(y)
                return y
            return apply

        inputs, logits = self._network(L, middle_of)
        return keras.Model(inputs, (logits, weights), name="resnet50_supernet")

    @staticmethod
    def _apply(layers, y):
        for layer in layers:
            y = layer(y)
        return y

    def build_model(self, choices, name=None, layer_set=None, fold_batch_norms=False):
        """The derived ResNet; blocks outside the scope are plain bottlenecks.

        `fold_batch_norms` is accepted for the deployment path and changes
        nothing: the converter folds BN into built-in convolutions itself.
        """
        self.validate_choices(choices)
        L = layer_set or keras_layer_set()

        def middle_of(name, planes, stride):
            choice = choices.get(name, "k3_relu")
            return lambda y: self._apply(self._middle(L, name, planes, stride, choice), y)

        inputs, logits = self._network(L, middle_of)
        return L.Model(inputs, logits, name=name or f"presnet50_{self.config['scope']}")

    def inherit_weights(self, model, supernet, choices):
        searched = {f"{b}_2_{suffix}" for b in self.blocks() for suffix in ("conv", "bn")}
        for layer in model.layers:
            if layer.weights and layer.name not in searched:
                layer.set_weights(supernet.get_layer(layer.name).get_weights())
        for block in self.blocks():
            op = supernet.get_layer(block)
            candidate = op.candidates[op.choices.index(choices[block])]
            for suffix in ("conv", "bn"):
                name = f"{block}_2_{suffix}"
                model.get_layer(name).set_weights(candidate.get_layer(name).get_weights())

    # -- latency ---------------------------------------------------------------------------

    def latency_ops(self):
        L = keras_layer_set()
        H, W, C = self.config["input_shape"]
        h, w = self._stem_output()
        last = self.planes[-1] * EXPANSION
        layout = self.layout()
        fh, fw = strided(layout[-1][5], layout[-1][4])

        def stem_model():
            inputs = keras.Input((H, W, C))
            return keras.Model(inputs, self._stem(L, inputs))

        def head_model():
            inputs = keras.Input((fh, fw, last))
            return keras.Model(inputs, self._head(L, inputs))

        def block_model(inplanes, planes, stride, size, choice):
            def build():
                inputs = keras.Input((*size, inplanes))
                middle = lambda y: self._apply(  # noqa: E731
                    self._middle(L, "block", planes, stride, choice), y)
                return keras.Model(inputs, self._bottleneck(L, inputs, "block", inplanes,
                                                            planes, stride, middle))
            return build

        def signature(inplanes, planes, stride, size, choice):
            kernel, activation = parse_choice(choice)
            oh, ow = strided(size, stride)
            return (f"bottleneck-input:{size[0]}x{size[1]}x{inplanes}-output:{oh}x{ow}x"
                    f"{planes * EXPANSION}-mid:{planes}-stride:{stride}-kernel:{kernel}"
                    f"-act:{activation}")

        fixed = [(f"resnet_stem-input:{H}x{W}x{C}-output:{h}x{w}x{self.stem_channels}"
                  f"-stem:{self.config['stem']}", stem_model),
                 (f"resnet_head-input:{fh}x{fw}x{last}-classes:{self.config['num_classes']}",
                  head_model)]
        blocks, search = {}, set(self.blocks())
        for name, _, inplanes, planes, stride, size in layout:
            args = (inplanes, planes, stride, size)
            if name in search:
                blocks[name] = [(signature(*args, c), block_model(*args, c))
                                for c in self.candidates(name)]
            else:
                fixed.append((signature(*args, "k3_relu"), block_model(*args, "k3_relu")))
        return fixed, blocks
