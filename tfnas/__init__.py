"""tfnas: neural architecture search for edge devices with Keras 3."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# pylint: disable=wrong-import-position
from tfnas import data  # noqa: E402
from tfnas.architecture import Architecture, ArchitectureError  # noqa: E402
from tfnas.builder import build_model  # noqa: E402
from tfnas.search_model import SearchModel  # noqa: E402
from tfnas.spaces import get_space  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Architecture", "ArchitectureError", "SearchModel", "build_model", "data",
           "get_space"]
