"""Search spaces, by name."""

from tfnas.spaces.base import (SearchSpace, SearchSpaceError, available_spaces, get_space,
                               register_space)
from tfnas.spaces.cifar_resnet import CifarResNetSpace
from tfnas.spaces.darts import DartsSpace
from tfnas.spaces.enas_micro import EnasMicroSpace
from tfnas.spaces.grunas import GrunasSpace
from tfnas.spaces.nasbench201 import NasBench201Space
from tfnas.spaces.resnet import ResNet50Space
from tfnas.spaces.resnet_widths import ResNet50WidthSpace
from tfnas.spaces.shufflenasnet import ShuffleNasNetSpace
from tfnas.spaces.widths import KerasModelSpace

# The space of a config that names none.
DEFAULT_SPACE = GrunasSpace.name

__all__ = ["CifarResNetSpace", "DEFAULT_SPACE", "DartsSpace", "EnasMicroSpace", "GrunasSpace",
           "KerasModelSpace", "NasBench201Space", "ResNet50Space", "ResNet50WidthSpace", "SearchSpace",
           "SearchSpaceError", "ShuffleNasNetSpace", "available_spaces", "get_space",
           "register_space"]
