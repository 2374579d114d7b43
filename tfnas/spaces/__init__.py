"""Search spaces, by name."""

from tfnas.spaces.base import (SearchSpace, SearchSpaceError, available_spaces, get_space,
                               register_space)
from tfnas.spaces.grunas import GrunasSpace
from tfnas.spaces.resnet import ResNet50Space

__all__ = ["GrunasSpace", "ResNet50Space", "SearchSpace", "SearchSpaceError",
           "available_spaces", "get_space", "register_space"]
