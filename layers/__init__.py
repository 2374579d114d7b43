"""Searchable and deployable Keras layers of tfnas."""

from tfnas.layers.binary_gate import BinaryGateMixing
from tfnas.layers.cell_ops import CellOp, PickInput, Zero
from tfnas.layers.channel_shuffle import ChannelShuffle, ChannelSplit
from tfnas.layers.chosen_path import ChosenPathMixing, set_path
from tfnas.layers.fused_batch_norm import FusedBatchNormalization
from tfnas.layers.grouped_conv import GroupedConv2D, group_sizes
from tfnas.layers.grunas_unit import GrunasUnit
from tfnas.layers.mixed_op import MixedOp
from tfnas.layers.min_pooling import MinPooling2D
from tfnas.layers.mixing import GumbelSoftmaxMixing, MixingRule, SoftmaxMixing

__all__ = ["BinaryGateMixing", "CellOp", "ChannelShuffle", "ChannelSplit",
           "ChosenPathMixing", "FusedBatchNormalization", "GroupedConv2D", "GrunasUnit",
           "GumbelSoftmaxMixing", "MinPooling2D", "MixedOp", "MixingRule", "PickInput",
           "SoftmaxMixing", "Zero", "group_sizes", "set_path"]
