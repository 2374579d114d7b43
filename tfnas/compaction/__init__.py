"""Compaction from a baseline: channel groups, channel surgery, and the algorithms that
choose what to keep (Shafiee et al., 2020)."""

from tfnas.compaction.channel_groups import (ChannelGraphError, ChannelGroup, channel_graph,
                                             channel_groups)
from tfnas.compaction.surgery import resize, zero_channels
from tfnas.compaction.algorithm import ALGORITHMS, CompactionAlgorithm, register_algorithm
from tfnas.compaction import (  # noqa: F401  (registers the algorithms)
    generative_synthesis, group_lasso, morphnet, variational_dropout)

__all__ = ["ALGORITHMS", "ChannelGraphError", "CompactionAlgorithm", "register_algorithm", "ChannelGroup", "channel_graph", "channel_groups", "resize",
           "zero_channels"]
