"""tfnas: neural architecture search for edge devices with Keras 3."""

import importlib
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"

# Imported on first use, so that `tfnas.errors` and the command line's flag
# parsing do not load TensorFlow.
_LAZY = {"Architecture": "tfnas.architecture", "ArchitectureError": "tfnas.architecture",
         "SearchModel": "tfnas.search_model", "build_model": "tfnas.builder",
         "data": "tfnas.data", "determinism": "tfnas.determinism",
         "get_space": "tfnas.spaces"}
_MODULES = ("data", "determinism")
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'tfnas' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    return module if name in _MODULES else getattr(module, name)


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
