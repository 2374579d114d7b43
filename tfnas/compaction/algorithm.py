"""What a compaction algorithm is, and the registry of algorithms by name.

An algorithm is one module: a `CompactionAlgorithm` subclass registered with
`@register_algorithm`, whose `defaults` and `schema` are the keys of
`search.<name>` when `search.algorithm` names it. The compaction method
(`tfnas.methods.compaction`) trains the baseline, then calls

    compact, macs = algorithm.compact(network, session)

which may train `network` through `session.fit` (backed up, resumable) and
returns the cut network (channel surgery, `tfnas.compaction.resize`) whose
MACs lie within the session's tolerance under its target
(`tfnas.compaction.target`).
"""

from tfnas.registry import Registry

ALGORITHMS = Registry("compaction algorithm", key="algorithm")


def register_algorithm(cls):
    """Class decorator: makes a `CompactionAlgorithm` available as `search.algorithm`."""
    return ALGORITHMS.register(cls.name)(cls)


class CompactionAlgorithm:
    """Base class. `settings` is the filled `search.<name>` section."""

    name = None
    defaults = {}
    schema = {}

    def __init__(self, settings):
        self.settings = settings

    def compact(self, network, session):
        """`(cut network, its MACs)` from the trained baseline `network`."""
        raise NotImplementedError
