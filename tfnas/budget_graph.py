"""DCA-NAS's lookup graph (Dutta et al., §3.3): which bound K' to search with for a budget K.

A search constrained to an expected cost K' derives a network whose size is
not K': the discrete network differs from the softmax mixture. The paper
searches over a grid of K', records the derived networks' sizes, and inverts
that curve to choose the K' of a budget. `sweep` runs those searches (one run
directory each, under `searches/`, reused when a sweep is resumed) with the
recipe's penalty at `budget = K'` and the paper's fixed bound K' = budget;
`bound_for` inverts the curve. `tfnas budget-graph` does both and draws it.
The lagrangian penalty's `"bound": "derived"` reaches a budget in one search
instead.
"""

import copy
import os

import numpy as np

from tfnas.errors import ConfigError


def check_sweepable(config):
    """The recipe's search penalty has a budget to sweep; returns it."""
    penalty = config["search"].get("penalty")
    if not isinstance(penalty, dict) or "budget" not in penalty:
        raise ConfigError("tfnas budget-graph sweeps search.penalty.budget, and this recipe's "
                          f"penalty {penalty!r} has none; use a penalty with a budget "
                          "(\"lagrangian\").")
    return float(penalty["budget"])


def grid_config(config, bound):
    """The recipe with the paper's constraint at K' = `bound`."""
    config = copy.deepcopy(config)
    penalty = config["search"]["penalty"]
    penalty.update(budget=float(bound))
    # The sweep measures what a fixed bound gives: no tracking, no limits on the derivation.
    penalty.pop("bound", None)
    penalty.pop("tolerance", None)
    return config


def sweep(config, run, bounds, verbose=2):
    """One search per bound; returns `[{"bound", "derived_cost", "unit", "parameters",
    "run"}]`."""
    from tfnas import pipeline  # pylint: disable=import-outside-toplevel
    from tfnas.run_dir import RunDirectory  # pylint: disable=import-outside-toplevel

    check_sweepable(config)
    points = []
    for i, bound in enumerate(bounds):
        path = run.file("searches", f"bound{i}")
        resume = os.path.exists(os.path.join(path, "config.json"))
        sub_config = grid_config(config, bound)
        sub_config["name"] = f"{config['name']}-bound{i}"
        sub = RunDirectory(path, resume=resume)
        sub.save_config(sub_config)
        print(f"== budget graph: search {i + 1} of {len(bounds)}, K' = {bound:g} -> {path}")
        arch, _ = pipeline.search(sub_config, sub, verbose=verbose)
        metadata = arch.metadata or {}
        points.append({"bound": float(bound),
                       "derived_cost": float(metadata.get("derived_cost", arch.parameters)),
                       "unit": metadata.get("cost_unit", "parameters"),
                       "parameters": arch.parameters, "run": path})
    return points


def bound_for(points, budget):
    """The K' whose derived network costs `budget`, read off the graph.

    The derived cost is made non-decreasing in K' (a running maximum: a search
    under a looser bound is taken to derive at least as large a network), then
    interpolated linearly. Returns `(bound, inside)`: `inside` is False when
    the budget is outside the graph's range and the nearest end is returned.

    Example:

    >>> bound_for([{"bound": 10, "derived_cost": 12}, {"bound": 20, "derived_cost": 22}], 17)
    (15.0, True)
    """
    ordered = sorted(points, key=lambda p: p["bound"])
    bounds = np.array([p["bound"] for p in ordered], dtype=float)
    sizes = np.maximum.accumulate([p["derived_cost"] for p in ordered])
    if budget < sizes[0]:
        return float(bounds[0]), False
    if budget > sizes[-1]:
        return float(bounds[-1]), False
    # The largest bound whose size is still within the budget, and the next one.
    k = int(np.searchsorted(sizes, budget, side="right")) - 1
    if k == len(sizes) - 1 or sizes[k] == budget:
        return float(bounds[k]), True
    t = (budget - sizes[k]) / (sizes[k + 1] - sizes[k])
    return float(bounds[k] + t * (bounds[k + 1] - bounds[k])), True


def plot(points, budget, bound, unit, path):
    """The graph: derived cost against K', the budget and the bound read off it."""
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    ordered = sorted(points, key=lambda p: p["bound"])
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([p["bound"] for p in ordered], [p["derived_cost"] for p in ordered], "o-",
            label="derived network")
    lo, hi = ordered[0]["bound"], ordered[-1]["bound"]
    ax.plot([lo, hi], [lo, hi], ":", color="gray", label="derived = K'")
    ax.axhline(budget, color="C3", lw=0.8, label=f"budget K = {budget:g}")
    ax.axvline(bound, color="C2", lw=0.8, label=f"K' = {bound:g}")
    ax.set_xlabel(f"search bound K' ({unit})")
    ax.set_ylabel(f"derived network ({unit})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
