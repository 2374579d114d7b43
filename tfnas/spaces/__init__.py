"""Search spaces, by name."""

from tfnas.spaces.base import (SearchSpace, SearchSpaceError, available_spaces, get_space,
                               register_space)
from tfnas.spaces.grunas import GrunasSpace

__all__ = ["GrunasSpace", "SearchSpace", "SearchSpaceError", "available_spaces", "get_space",
           "register_space"]
