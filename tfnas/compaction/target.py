"""The cost of a resized network without building it, and the final cut to a FLOPs target.

`ChannelCost` counts the multiply-accumulates of the network that channel
surgery would make from the kept tied channels, layer by layer as
`tfnas.macs.count_macs` counts the built one, and updates the count in
O(layers touched) when one channel goes. `fit_to_target` is the calibrated
last step every compaction algorithm ends with: its channel scores decide the
order, the cost decides where to stop, so that the network lands within
`tolerance` under the target instead of wherever a fixed threshold falls.
"""

import math

import keras

from tfnas.compaction.channel_groups import PRODUCERS, ChannelGraphError
from tfnas.macs import layer_macs


class ChannelCost:
    """MACs of `graph`'s network as a function of which tied channels are kept.

    Example:

    >>> from tfnas.compaction import channel_graph
    >>> from tfnas.spaces.cifar_resnet import cifar_resnet
    >>> cost = ChannelCost(channel_graph(cifar_resnet(8)))
    >>> cost.macs() == cost.baseline
    True
    """

    def __init__(self, graph):
        self.graph = graph
        self.terms = []       # [layer name, factor, inputs kept, outputs kept]
        self.uses = {}        # tied channel -> [(term index, is input)]
        self.baseline = 0
        for layer in graph.model.layers:
            if isinstance(layer, keras.layers.InputLayer) or layer.name not in graph.inputs:
                continue
            macs = layer_macs(layer)
            if not macs:
                continue
            ins = [graph.find(e) for e in graph.inputs[layer.name]]
            outs = ([graph.find(e) for e in graph.outputs[layer.name]]
                    if isinstance(layer, PRODUCERS) else [])
            # MACs = factor * inputs * outputs (a depthwise conv: factor * channels).
            factor = macs / (len(ins) * (len(outs) or 1))
            index = len(self.terms)
            self.terms.append([layer.name, factor, len(ins), len(outs) or None])
            for t in ins:
                self.uses.setdefault(t, []).append((index, True))
            for t in outs:
                self.uses.setdefault(t, []).append((index, False))
            self.baseline += macs
        self.baseline = int(round(self.baseline))
        self._macs = float(self.baseline)

    @staticmethod
    def _term(factor, n_in, n_out):
        return factor * n_in * (1 if n_out is None else n_out)

    def drop_delta(self, tied, sign=-1):
        """The change of the MACs when `tied` goes (`sign=-1`) or comes back (`+1`)."""
        delta = 0.0
        changes = {}
        for index, is_input in self.uses.get(tied, ()):
            _, factor, n_in, n_out = self.terms[index]
            n_in, n_out = changes.get(index, (n_in, n_out))
            new = (n_in + sign, n_out) if is_input else (n_in, n_out + sign)
            delta += self._term(factor, *new) - self._term(factor, n_in, n_out)
            changes[index] = new
        return delta, changes

    def apply(self, tied, sign=-1):
        delta, changes = self.drop_delta(tied, sign)
        for index, (n_in, n_out) in changes.items():
            self.terms[index][2:] = [n_in, n_out]
        self._macs += delta

    def macs(self):
        return int(round(self._macs))


class WidthCost:
    """MACs of `graph`'s network as a function of its resizable groups' widths, which may
    exceed the network's own (a grown group's new channels are read like its others).

    Example:

    >>> from tfnas.compaction import channel_graph
    >>> from tfnas.spaces.cifar_resnet import cifar_resnet
    >>> cost = WidthCost(channel_graph(cifar_resnet(8)))
    >>> cost.macs(cost.widths) == ChannelCost(cost.graph).baseline
    True
    """

    def __init__(self, graph):
        self.graph = graph
        channels = ChannelCost(graph)
        resizable = [g for g in graph.groups() if not g.fixed]
        self.widths = {g.name: g.width for g in resizable}
        group_of = {t: g.name for g in resizable for t in g.tied}
        counts = [[{}, {}] for _ in channels.terms]  # per term: {group: channels} in, out
        for tied, uses in channels.uses.items():
            if tied in group_of:
                for index, is_input in uses:
                    side = counts[index][0 if is_input else 1]
                    side[group_of[tied]] = side.get(group_of[tied], 0) + 1
        # A term: (factor, fixed inputs, {group: share of its width}, fixed outputs or None,
        # {group: share}).
        self.terms = []
        for (_, factor, n_in, n_out), (ins, outs) in zip(channels.terms, counts):
            self.terms.append((
                factor, n_in - sum(ins.values()), {g: c / self.widths[g] for g, c in ins.items()},
                None if n_out is None else n_out - sum(outs.values()),
                {g: c / self.widths[g] for g, c in outs.items()}))

    def macs(self, widths):
        """The MACs with `widths` (`{group: width}`; groups left out keep theirs)."""
        total = 0.0
        for factor, fixed_in, ins, fixed_out, outs in self.terms:
            n_in = fixed_in + sum(share * widths.get(g, self.widths[g]) for g, share in ins.items())
            if fixed_out is None:
                total += factor * n_in
                continue
            total += factor * n_in * (fixed_out + sum(share * widths.get(g, self.widths[g])
                                                      for g, share in outs.items()))
        return int(round(total))


def uniform_expansion(cost, alive, target_macs, tolerance, max_widths):
    """`({group: width}, MACs)`: MorphNet's uniform expansion of the alive widths
    (`{group: alive channels}`) to a MACs target, with a `WidthCost`.

    Every group grows with one width multiplier m, to floor(m x alive) channels (at
    least 1, at most `max_widths[group]`): channel k of a group with a alive channels
    comes in at m = k / a. The multiplier rises until the next channel would pass the
    target; then the channels that still fit come in, in the same order, until the
    network lies within `tolerance` under the target.
    """
    widths = {g: 1 for g in alive}
    macs = cost.macs(widths)
    if macs > target_macs:
        raise ChannelGraphError(f"The target ({target_macs:,.0f} MACs) is below the smallest "
                                f"network with one channel per group ({macs:,} MACs).")
    order = sorted((k / max(1, alive[g]), g, k) for g in alive
                   for k in range(2, max_widths[g] + 1))
    low = math.floor((1 - tolerance) * target_macs)
    for _, g, k in order:
        if macs >= low:
            break
        if widths[g] != k - 1:  # an earlier channel of the group did not fit
            continue
        trial = cost.macs({**widths, g: k})
        if trial <= target_macs:
            widths[g], macs = k, trial
    return widths, macs


def fit_to_target(graph, groups, scores, target_macs, tolerance=0.02):
    """`{group: kept positions}` whose network's MACs lie in
    `[(1 - tolerance) * target, target]` when the channels allow it.

    Channels go in the order of `scores` (`{group: [score per position]}`,
    lowest first: the algorithm's threshold, raised until the network fits
    under the target); then, if the cut overshot by more than the tolerance,
    the most important of the dropped channels whose cost still fits come
    back, so that channels of different costs (a residual stream's and a
    block's inner channel differ by 20x in ResNet-32) fill the remainder. A
    group always keeps one channel.
    """
    cost = ChannelCost(graph)
    if target_macs >= cost.baseline:
        raise ChannelGraphError(f"The target ({target_macs:,.0f} MACs) is not below the "
                                f"baseline's {cost.baseline:,} MACs; choose a smaller target.")
    order = sorted(((float(s), g.name, i) for g in groups for i, s in enumerate(scores[g.name])),
                   key=lambda item: (item[0], item[1], item[2]))
    by_name = {g.name: g for g in groups}
    kept = {g.name: set(range(g.width)) for g in groups}
    dropped = []
    for score, name, i in order:
        if cost.macs() <= target_macs:
            break
        if len(kept[name]) == 1:
            continue
        kept[name].discard(i)
        cost.apply(by_name[name].tied[i], -1)
        dropped.append((score, name, i))
    if cost.macs() > target_macs:
        smallest = cost.macs()
        raise ChannelGraphError(f"The target ({target_macs:,.0f} MACs) is below the smallest "
                                f"network with one channel per group ({smallest:,} MACs).")
    low = math.floor((1 - tolerance) * target_macs)
    for score, name, i in sorted(dropped, key=lambda item: -item[0]):
        if cost.macs() >= low:
            break
        delta, _ = cost.drop_delta(by_name[name].tied[i], +1)
        if cost.macs() + delta <= target_macs:
            kept[name].add(i)
            cost.apply(by_name[name].tied[i], +1)
    return {name: sorted(positions) for name, positions in kept.items()}, cost.macs()


def channel_scores(groups, per_producer):
    """`{group: [score per tied channel]}` from `{producer: vector over its output channels}`:
    the root of the summed squares over the producers a tied channel spans."""
    scores = {}
    for g in groups:
        scores[g.name] = [math.sqrt(sum(float(per_producer[p][j]) ** 2
                                        for p, j in channel.items() if p in per_producer))
                          for channel in g.channels]
    return scores

