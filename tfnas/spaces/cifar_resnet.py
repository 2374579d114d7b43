"""The CIFAR ResNets of He et al. (2016), 6n + 2 layers, as a space of channel widths.

The baselines of the compact-architecture study (Shafiee et al., *State of compact
architecture search for deep neural networks*, 2020):
ResNet-32 for CIFAR-10 and ResNet-50 (n = 8) for CIFAR-100. A 3x3 stem conv
(16 channels), three stages of n basic blocks (two 3x3 convs, 16/32/64
channels, the first of stages 2 and 3 at stride 2), global average pooling and
a dense classifier; convolutions carry no bias and each is followed by batch
normalization. Where a block changes the shape, its shortcut is a 1x1
convolution with batch normalization (the paper's option B), so that every
channel of a stage's residual stream is an ordinary, resizable channel.

The architecture is one width per channel group (`tfnas.spaces.widths`): a
stage's residual stream, and the inner channels of every block.
"""

import keras

from tfnas.spaces.base import SearchSpaceError, register_space
from tfnas.spaces.cells import CIFAR_MEAN, CIFAR_STD
from tfnas.spaces.widths import WidthSpace

BN = {"momentum": 0.9, "epsilon": 1e-5}  # PyTorch's BatchNorm2d defaults


def cifar_resnet(depth=32, widths=(16, 32, 64), num_classes=10, input_shape=(32, 32, 3),
                 mean=CIFAR_MEAN, std=CIFAR_STD, name=None):
    """The CIFAR ResNet of `depth` = 6n + 2 layers as a functional Keras model.

    Example:

    >>> from tfnas.macs import count_macs
    >>> model = cifar_resnet(32)
    >>> model.count_params(), count_macs(model)
    (469370, 69124736)
    """
    if (depth - 2) % 6 or depth < 8:
        raise SearchSpaceError(f"A CIFAR ResNet has 6n + 2 layers (20, 32, 44, 56, 110; 50 "
                               f"for n = 8); got depth {depth}.")
    n = (depth - 2) // 6
    L = keras.layers
    inputs = keras.Input(tuple(input_shape), name="images")
    x = L.Normalization(mean=[255.0 * m for m in mean], variance=[(255.0 * s) ** 2 for s in std],
                        name="normalize")(inputs)
    x = L.Conv2D(widths[0], 3, padding="same", use_bias=False, name="stem_conv")(x)
    x = L.BatchNormalization(name="stem_bn", **BN)(x)
    x = L.ReLU(name="stem_relu")(x)
    for s, width in enumerate(widths, start=1):
        for b in range(1, n + 1):
            stride = 2 if s > 1 and b == 1 else 1
            prefix = f"stage{s}_block{b}"
            shortcut = x
            if stride != 1 or x.shape[-1] != width:
                shortcut = L.Conv2D(width, 1, strides=stride, use_bias=False,
                                    name=f"{prefix}_shortcut_conv")(x)
                shortcut = L.BatchNormalization(name=f"{prefix}_shortcut_bn", **BN)(shortcut)
            h = L.Conv2D(width, 3, strides=stride, padding="same", use_bias=False,
                         name=f"{prefix}_conv1")(x)
            h = L.BatchNormalization(name=f"{prefix}_bn1", **BN)(h)
            h = L.ReLU(name=f"{prefix}_relu1")(h)
            h = L.Conv2D(width, 3, padding="same", use_bias=False, name=f"{prefix}_conv2")(h)
            h = L.BatchNormalization(name=f"{prefix}_bn2", **BN)(h)
            x = L.Add(name=f"{prefix}_add")([shortcut, h])
            x = L.ReLU(name=f"{prefix}_relu")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    outputs = L.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}")


@register_space
class CifarResNetSpace(WidthSpace):
    """Channel widths of a CIFAR ResNet (`cifar_resnet`).

    Config: `depth` (6n + 2; 32 for CIFAR-10, 50 for CIFAR-100 in Shafiee et al., 2020),
    `widths` (the stages' channels), `num_classes`, `input_shape`, `mean`,
    `std`, and `max_multiplier` (the widest a group may grow, as a multiple of
    its baseline width, for MorphNet's expansion).
    """

    name = "cifar_resnet"
    defaults = {"depth": 32, "widths": [16, 32, 64], "num_classes": 10,
                "input_shape": [32, 32, 3], "mean": CIFAR_MEAN, "std": CIFAR_STD,
                "max_multiplier": 2.0}

    def build_baseline(self, name=None):
        c = self.config
        return cifar_resnet(c["depth"], c["widths"], c["num_classes"], c["input_shape"],
                            c["mean"], c["std"], name=name)
