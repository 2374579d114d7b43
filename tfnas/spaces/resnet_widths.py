"""torchvision's ResNet-50 as a space of channel widths (a compaction baseline).

The network is the `resnet50` space's with every searchable middle conv at
torchvision's 3x3 and ReLU: at 1000 classes and 224x224 it has torchvision's
25,557,032 parameters and 4,089,184,256 multiply-accumulates. As a width space
(`tfnas.spaces.widths`) its blocks are the stem's channels, each stage's
residual stream and every bottleneck's two inner widths.

Example:

>>> space = ResNet50WidthSpace(width_multiplier=0.25, stem="cifar")
>>> len(space.blocks()), space.baseline_widths()["layer4_0_1_conv"]
(37, 128)
"""

from tfnas.spaces.base import register_space
from tfnas.spaces.resnet import ResNet50Space
from tfnas.spaces.widths import WidthSpace


@register_space
class ResNet50WidthSpace(WidthSpace):
    """Channel widths of torchvision's ResNet-50. Config: `num_classes`, `input_shape`,
    `stem` ("imagenet": torchvision's; "cifar": a 3x3 stride-1 stem), `width_multiplier`,
    `depths`, `mean`, `std` (as the `resnet50` space), and `max_multiplier` (the widest a
    group may grow, as a multiple of its baseline width)."""

    name = "resnet50_widths"
    defaults = {key: value for key, value in ResNet50Space.defaults.items()
                if key not in ("scope", "kernels", "activations")}
    defaults["max_multiplier"] = 1.0

    def build_baseline(self, name=None):
        config = {k: v for k, v in self.config.items() if k != "max_multiplier"}
        space = ResNet50Space(**config, scope="s", kernels=[3, 5], activations=["relu"])
        return space.build_model({b: "k3_relu" for b in space.blocks()}, name=name)
