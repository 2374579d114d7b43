"""Search methods, by name (`search.method`). See `tfnas.methods.base`."""

from tfnas.methods.base import (DEFAULT_METHOD, METHODS, SearchMethod, SupernetMethod,
                                fill_section, method_class, register_method)
from tfnas.methods import (compaction, differentiable, enas, tuner,  # noqa: F401  (registers)
                           zero_cost)


def get_method(config, prepared):
    """The search method of `config["search"]`, built on the `prepared` data and space."""
    return method_class(config["search"]["method"])(config, prepared)


__all__ = ["DEFAULT_METHOD", "METHODS", "SearchMethod", "SupernetMethod", "fill_section",
           "get_method", "method_class", "register_method"]
