"""Compaction from a baseline: channel groups, channel surgery, and the algorithms that
choose what to keep (seed 002)."""

from tfnas.compaction.channel_groups import (ChannelGraphError, ChannelGroup, channel_graph,
                                             channel_groups)
from tfnas.compaction.surgery import resize, zero_channels

__all__ = ["ChannelGraphError", "ChannelGroup", "channel_graph", "channel_groups", "resize",
           "zero_channels"]
