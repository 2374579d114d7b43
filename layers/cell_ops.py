"""The ops of ENAS-style cells, as layers a weight-sharing supernet can choose between.

A derived cell network chains the built-in layers of `cell_op_layers` and
`factorized_reduce_layers` directly; the supernet wraps the same layers in
`CellOp` (identity at stride 2 is the factorized reduction), under the same
name suffixes, so weights move between the two by name.
"""

import keras
from keras import ops

from tfnas.layers.fused_batch_norm import FusedBatchNormalization
from tfnas.layers.min_pooling import MinPooling2D

CELL_OPS = ("sep_conv_3x3", "sep_conv_5x5", "max_pool_3x3", "min_pool_3x3", "identity",
            "conv_1x1")
# The original ENAS micro space's five ops (Pham et al., 2018), in its code's order.
ENAS_OPS = ("sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3", "identity")
# DARTS's PRIMITIVES (Liu et al., 2019, genotypes.py), in its order.
DARTS_OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
             "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
# NAS-Bench-201's five ops (Dong and Yang, 2020), in its order.
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
OPS = tuple(dict.fromkeys(CELL_OPS + ENAS_OPS + DARTS_OPS + NB201_OPS))
BN = {"momentum": 0.9, "epsilon": 1e-5}


def batch_norm(name, affine=True, fused=False):
    """BatchNorm as the papers' PyTorch code has it; `affine=False` (their search networks)
    learns no scale and offset; `fused`: `FusedBatchNormalization`, the same variables."""
    layer = FusedBatchNormalization if fused else keras.layers.BatchNormalization
    return layer(name=name, center=affine, scale=affine, **BN)


def cell_op_layers(op, channels, stride, name, affine=True, fused_batch_norm=False):
    """`[(suffix, layer)]`, the chain of built-in layers of `op` (none for identity at
    stride 1; identity at stride 2 is `factorized_reduce_layers`, not a chain; `none` is
    `Zero`). `skip_connect` is the identity; `affine=False` gives BatchNorms without scale
    and offset (DARTS's search network); `fused_batch_norm` gives
    `FusedBatchNormalization`s (supernets) instead of built-in ones."""
    L = keras.layers
    if op in ("identity", "skip_connect"):
        if stride != 1:
            raise ValueError(f"{op} at stride 2 is a factorized reduction, not a chain.")
        return []
    if op == "none":
        raise ValueError("none is the Zero layer, not a chain.")
    if op in ("max_pool_3x3", "min_pool_3x3", "avg_pool_3x3"):
        pool = {"max_pool_3x3": L.MaxPooling2D, "min_pool_3x3": MinPooling2D,
                "avg_pool_3x3": L.AveragePooling2D}[op]
        return [("pool", pool(3, strides=stride, padding="same", name=f"{name}_pool"))]
    if op in ("conv_1x1", "nor_conv_1x1", "nor_conv_3x3"):
        kernel = 3 if op == "nor_conv_3x3" else 1
        return [("relu", L.ReLU(name=f"{name}_relu")),
                ("conv", L.Conv2D(channels, kernel, strides=stride, padding="same",
                                  use_bias=False, name=f"{name}_conv")),
                ("bn", batch_norm(f"{name}_bn", affine, fused_batch_norm))]
    if op in ("dil_conv_3x3", "dil_conv_5x5"):
        # TensorFlow has no strided dilated convolution: stride 1, then every second pixel,
        # the same samples as PyTorch's symmetric padding takes.
        chain = [("relu", L.ReLU(name=f"{name}_relu")),
                 ("dw", L.DepthwiseConv2D(int(op[-1]), padding="same", dilation_rate=2,
                                          use_bias=False, name=f"{name}_dw"))]
        if stride != 1:
            chain.append(("subsample", L.MaxPooling2D(1, strides=stride,
                                                      name=f"{name}_subsample")))
        return chain + [("pw", L.Conv2D(channels, 1, use_bias=False, name=f"{name}_pw")),
                        ("bn", batch_norm(f"{name}_bn", affine, fused_batch_norm))]
    if op not in ("sep_conv_3x3", "sep_conv_5x5"):
        raise ValueError(f"unknown cell op {op!r}; ops are {list(OPS)}.")
    kernel = 3 if op == "sep_conv_3x3" else 5
    chain = []
    for k in range(2):  # ENAS and DARTS apply a separable convolution twice
        chain += [(f"relu{k}", L.ReLU(name=f"{name}_relu{k}")),
                  (f"dw{k}", L.DepthwiseConv2D(kernel, strides=stride if k == 0 else 1,
                                               padding="same", use_bias=False,
                                               name=f"{name}_dw{k}")),
                  (f"pw{k}", L.Conv2D(channels, 1, use_bias=False, name=f"{name}_pw{k}")),
                  (f"bn{k}", batch_norm(f"{name}_bn{k}", affine, fused_batch_norm))]
    return chain


def factorized_reduce_layers(channels, name, affine=True, fused_batch_norm=False):
    """`{suffix: layer}` of a factorized reduction: two 1x1 stride-2 convolutions, the
    second on the input shifted by one pixel, concatenated, then BatchNorm."""
    L = keras.layers
    return {"relu": L.ReLU(name=f"{name}_relu"),
            "conv_a": L.Conv2D(channels // 2, 1, strides=2, use_bias=False,
                               name=f"{name}_conv_a"),
            "pad": L.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_pad"),
            "crop": L.Cropping2D(((1, 0), (1, 0)), name=f"{name}_crop"),
            "conv_b": L.Conv2D(channels - channels // 2, 1, strides=2, use_bias=False,
                               name=f"{name}_conv_b"),
            "concat": L.Concatenate(name=f"{name}_concat"),
            "bn": batch_norm(f"{name}_bn", affine, fused_batch_norm)}


def factorized_reduce(layers, x, training=None):
    """Applies the layers of `factorized_reduce_layers` to `x`."""
    x = layers["relu"](x)
    a = layers["conv_a"](x)
    b = layers["conv_b"](layers["crop"](layers["pad"](x)))
    return layers["bn"](layers["concat"]([a, b]), training=training)


def apply_op(x, op, channels, stride, name, affine=True):
    """`x` through cell op `op` made of built-in layers named `<name>_<suffix>`, as a
    derived network has it: the chain of `cell_op_layers`, or a factorized reduction for
    the identity at stride 2 (`none` is left out of derived networks, not applied)."""
    if op in ("identity", "skip_connect") and stride != 1:
        return factorized_reduce(factorized_reduce_layers(channels, name, affine), x)
    for _, layer in cell_op_layers(op, channels, stride, name, affine):
        x = layer(x)
    return x


@keras.saving.register_keras_serializable(package="tfnas")
class CellOp(keras.layers.Layer):
    """One cell op (`OPS`) as a single layer; its parts are the built-in layers a
    derived network chains, named `<name>_<suffix>` (`parts`). Its batch norms are
    `FusedBatchNormalization`s, the same variables as a derived network's built-in ones:
    a supernet has hundreds, and fused they make a smaller, faster traced step
    (`fused_batch_norm=False` keeps Keras's own).

    Example:

    >>> op = CellOp("sep_conv_3x3", channels=8, strides=2)
    >>> tuple(op(keras.ops.ones((1, 8, 8, 8))).shape)
    (1, 4, 4, 8)
    >>> sorted(op.parts)[:3]
    ['bn0', 'bn1', 'dw0']
    """

    def __init__(self, op, channels, strides=1, affine=True, fused_batch_norm=True,
                 **kwargs):
        super().__init__(**kwargs)
        self.op, self.channels, self.strides = op, int(channels), int(strides)
        self.affine, self.fused_batch_norm = bool(affine), bool(fused_batch_norm)
        self.factorized = op in ("identity", "skip_connect") and self.strides != 1
        if self.factorized:
            reduce = factorized_reduce_layers(self.channels, self.name, self.affine,
                                              self.fused_batch_norm)
            self.suffixes, self.chain = list(reduce), list(reduce.values())
        elif op == "none":
            self.suffixes, self.chain = ["zero"], [Zero(self.strides, name=f"{self.name}_zero")]
        else:
            pairs = cell_op_layers(op, self.channels, self.strides, self.name, self.affine,
                                   self.fused_batch_norm)
            self.suffixes = [s for s, _ in pairs]
            self.chain = [layer for _, layer in pairs]

    @property
    def always_zero(self):
        """Whether the op outputs zeros whatever its input (`none`)."""
        return self.op == "none"

    @property
    def parts(self):
        """`{suffix: layer}` of the layers that hold weights (and the rest)."""
        return dict(zip(self.suffixes, self.chain))

    def build(self, input_shape):
        shape = input_shape
        if self.factorized:
            parts = self.parts
            for suffix in ("conv_a", "conv_b"):
                parts[suffix].build(input_shape)
            half = parts["conv_a"].compute_output_shape(input_shape)
            parts["bn"].build(half[:-1] + (self.channels,))
        else:
            for layer in self.chain:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)

    def call(self, inputs, training=None):
        if self.factorized:
            return factorized_reduce(self.parts, inputs, training=training)
        x = inputs
        for layer in self.chain:
            x = layer(x, training=training) if isinstance(
                layer, keras.layers.BatchNormalization) else layer(x)
        return x

    def compute_output_shape(self, input_shape):
        if self.factorized or self.strides != 1:
            h, w = input_shape[1], input_shape[2]
            h = None if h is None else (h + 1) // 2
            w = None if w is None else (w + 1) // 2
            return (input_shape[0], h, w, self.channels)
        return tuple(input_shape[:-1]) + (self.channels,)

    def get_config(self):
        return {**super().get_config(), "op": self.op, "channels": self.channels,
                "strides": self.strides, "affine": self.affine,
                "fused_batch_norm": self.fused_batch_norm}


@keras.saving.register_keras_serializable(package="tfnas")
class PickInput(keras.layers.Layer):
    """Picks tensor `index` of a list of inputs and applies `layer` to it (if given): a
    candidate of a supernet's choice of a block's input.

    Example:

    >>> pick = PickInput(1)
    >>> keras.ops.convert_to_numpy(pick([keras.ops.zeros((1, 2)), keras.ops.ones((1, 2))]))
    array([[1., 1.]], dtype=float32)
    """

    def __init__(self, index, layer=None, **kwargs):
        super().__init__(**kwargs)
        self.index, self.layer = int(index), layer

    def build(self, input_shape):
        if self.layer is not None and not self.layer.built:
            self.layer.build(input_shape[self.index])

    def call(self, inputs, training=None):
        x = inputs[self.index]
        return x if self.layer is None else self.layer(x, training=training)

    def compute_output_shape(self, input_shape):
        shape = input_shape[self.index]
        return shape if self.layer is None else self.layer.compute_output_shape(shape)

    def get_config(self):
        return {**super().get_config(), "index": self.index,
                "layer": None if self.layer is None
                else keras.saving.serialize_keras_object(self.layer)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("layer") is not None:
            config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfnas")
class DropPath(keras.layers.Layer):
    """DARTS's drop-path: in training, each sample's path is zeroed with probability
    `rate` and kept ones are scaled by 1 / (1 - rate); at inference it is the identity
    (nothing reaches a SavedModel or TFLite graph). `rate` is a variable that
    `DropPathSchedule` raises linearly to `maximum` over training, as DARTS's
    `drop_path_prob * epoch / epochs`.

    Example:

    >>> layer = DropPath(maximum=0.2)
    >>> float(keras.ops.sum(layer(keras.ops.ones((1, 2, 2, 1)))))  # inference: identity
    4.0
    """

    def __init__(self, maximum=0.2, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.maximum = float(maximum)
        if not 0 <= self.maximum < 1:
            raise ValueError(f"{self.name}: maximum is a probability below 1, got {maximum}.")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        self.rate = self.add_weight(name="rate", shape=(), initializer="zeros",
                                    trainable=False)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        keep = 1.0 - ops.cast(self.rate, inputs.dtype)
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        mask = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator,
                                                     dtype=inputs.dtype))
        return inputs / keep * mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "maximum": self.maximum, "seed": self.seed}


class DropPathSchedule(keras.callbacks.Callback):
    """Sets every `DropPath` layer's rate to `maximum * epoch / epochs` at the start of each
    epoch (DARTS's schedule)."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = max(1, int(epochs))

    def on_epoch_begin(self, epoch, logs=None):
        for layer in drop_path_layers(self.model):
            layer.rate.assign(layer.maximum * epoch / self.epochs)


def drop_path_layers(model):
    """The `DropPath` layers of a (possibly nested) model."""
    return [layer for layer in model._flatten_layers()  # pylint: disable=protected-access
            if isinstance(layer, DropPath)]


@keras.saving.register_keras_serializable(package="tfnas")
class Zero(keras.layers.Layer):
    """Zeros shaped like its input (every `strides`-th pixel at stride 2): the candidate of
    a supernet choice that contributes nothing (DARTS's and NAS-Bench-201's `none`; a node
    that another node uses is not in the ENAS cell's output).

    Example:

    >>> keras.ops.convert_to_numpy(Zero()(keras.ops.ones((1, 2)))).tolist()
    [[0.0, 0.0]]
    >>> tuple(Zero(strides=2)(keras.ops.ones((1, 5, 4, 3))).shape)
    (1, 3, 2, 3)
    """

    # Mixing rules leave a candidate that is always zero out of their weighted sums.
    always_zero = True

    def __init__(self, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.strides = int(strides)

    def call(self, inputs):
        if self.strides != 1:
            inputs = inputs[:, ::self.strides, ::self.strides, :]
        return keras.ops.zeros_like(inputs)

    def compute_output_shape(self, input_shape):
        if self.strides == 1:
            return input_shape
        return (input_shape[0],) + tuple(
            None if d is None else (d + self.strides - 1) // self.strides
            for d in input_shape[1:3]) + tuple(input_shape[3:])

    def get_config(self):
        return {**super().get_config(), "strides": self.strides}
