"""The most probable architecture whose cost lies within limits.

A derivation is one alternative from each of several independent groups
(`SearchSpace.derivation_groups`): a block's candidates, or a DARTS node's
pairs of edges with their ops. Each alternative has a score (its
log-probability) and a cost; the groups' costs add up. Choosing the
highest-scoring combination whose total cost lies in `[low, high]` is a
multiple-choice knapsack: a dynamic program over the cost axis cut into
`bins` intervals, which keeps the best score reachable in each interval. A
combination's cost is rounded only to find it; the limits are checked on its
exact cost.
"""

import numpy as np


class BudgetError(ValueError):
    """No architecture of the space costs at most the upper limit."""


def reachable_costs(groups, fixed=0.0, bins=4000):
    """The distinct total costs of one alternative from each group, ascending.

    Args:
        groups: a list of groups, each a list of the alternatives' costs.
        fixed: the cost every architecture has.
        bins: resolution of the cost axis: sums closer than the dearest total over
            `bins` count once (each kept with its exact cost).

    Example:

    >>> reachable_costs([[0.0, 5.0], [1.0, 3.0]], fixed=10.0)
    [11.0, 13.0, 16.0, 18.0]
    """
    resolution = max(sum(max(g) for g in groups), 1e-12) / bins
    reached = {0: 0.0}
    for group in groups:
        step = {}
        for total in reached.values():
            for cost in set(group):
                step.setdefault(int(round((total + cost) / resolution)), total + cost)
        reached = step
    return sorted(fixed + total for total in reached.values())


def most_probable_within(groups, limits, fixed=0.0, bins=4000):
    """Indices of the chosen alternatives, one per group, and their exact total cost.

    Args:
        groups: a list of groups, each a list of `(score, cost)` alternatives.
        limits: `(low, high)` on the total cost, `fixed` included. If no
            combination lies in the interval, the one nearest under `high` is
            chosen (the caller sees its cost).
        fixed: the cost every architecture has.
        bins: resolution of the cost axis.

    Example:

    >>> groups = [[(0.0, 0.0), (-1.0, 5.0)], [(0.0, 1.0), (-0.5, 3.0)]]
    >>> most_probable_within(groups, (6.0, 8.0))
    ([1, 0], 6.0)
    >>> most_probable_within(groups, (0.0, 8.0))
    ([0, 0], 1.0)
    >>> most_probable_within(groups, (4.0, 5.5))  # nothing costs 4 to 5.5: nearest under
    ([0, 1], 3.0)
    """
    low, high = limits[0] - fixed, limits[1] - fixed
    cheapest = sum(min(c for _, c in g) for g in groups)
    if high < cheapest - 1e-9 * max(1.0, abs(cheapest)):
        raise BudgetError(f"no architecture costs at most {limits[1]:g}; the cheapest costs "
                          f"{cheapest + fixed:g}.")
    resolution = max(high, 1e-12) / bins
    size = bins + len(groups) + 1  # rounding may carry a sum a few bins past `high`
    steps = [[int(round(c / resolution)) for _, c in g] for g in groups]
    best = np.full(size, -np.inf)
    best[0] = 0.0
    picks = []
    for group, group_steps in zip(groups, steps):
        new, pick = np.full(size, -np.inf), np.full(size, -1, dtype=np.int64)
        for a, ((score, _), k) in enumerate(zip(group, group_steps)):
            if k >= size:
                continue
            candidate = best[:size - k] + score
            better = candidate > new[k:]
            new[k:][better] = candidate[better]
            pick[k:][better] = a
        picks.append(pick)
        best = new

    def combination(end):
        chosen = []
        for pick, group_steps in zip(reversed(picks), reversed(steps)):
            a = int(pick[end])
            chosen.append(a)
            end -= group_steps[a]
        chosen.reverse()
        return chosen, fixed + sum(g[a][1] for g, a in zip(groups, chosen))

    # Best score first: the most probable combination within the limits.
    order = [int(e) for e in np.argsort(-best, kind="stable") if np.isfinite(best[e])]
    for end in order:
        chosen, cost = combination(end)
        if limits[0] <= cost <= limits[1]:
            return chosen, cost
    # None is: the most probable of those that come nearest under `high`.
    for end in sorted(order, reverse=True):
        chosen, cost = combination(end)
        if cost <= limits[1]:
            return chosen, cost
    chosen = [int(np.argmin([c for _, c in g])) for g in groups]  # rounding hid them all
    return chosen, fixed + sum(g[a][1] for g, a in zip(groups, chosen))
