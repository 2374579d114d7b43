"""Training-free search: score sampled architectures with zero-cost proxies, keep the best.

`search.method: "zero_cost"` draws `search.candidates` distinct architectures of the
space (every one, when the space has no more), builds each at initialization from the
run's seed, and scores it on one training batch with `search.proxy` (`tfnas.proxies`;
a list is combined by `proxies.vote`). Architectures over a `search.constraints` limit
are scored but never chosen. The best is written as the architecture document, and the
pipeline retrains and exports it as for every method. `logs/candidates.csv` holds every
candidate's choices, scores and costs; `logs/score_vs_parameters.png` plots them.

With `search.selection: "perturbation"` the candidates are not drawn but made, by
Zero-Cost-PT (`tfnas.perturbation`): on the space's untrained softmax supernet (built
from the run's seed), it makes `search.candidates` passes over the decisions, each in
its own random order and keeping per decision the candidate whose removal lowers the
proxy most; the distinct architectures of the passes are then scored and chosen from as
above.
"""

import csv
import json
import math
import os
import time

import keras

from tfnas import perturbation, proxies, schema
from tfnas.architecture import from_choices
from tfnas.costs import LatencyCost
from tfnas.errors import ConfigError
from tfnas.methods.base import SearchMethod, register_method
from tfnas.methods.candidates import (PROXY_SCHEMA, proxy_names, sample_architectures,
                                      score_architectures)
from tfnas.methods.tuner import (COST_LIMITS, COST_LIMITS_SCHEMA, TunerSearch,
                                 check_cost_limits)


@register_method
class ZeroCostSearch(SearchMethod):
    """`search.method: "zero_cost"`: the best of sampled architectures by a zero-cost proxy."""

    name = "zero_cost"
    defaults = {
        "proxy": "naswot",       # a proxy of tfnas.proxies, or a list of them (their vote)
        "candidates": 100,       # distinct architectures scored (all, when the space is smaller)
        # "sampling": candidates drawn at random; "perturbation": made by Zero-Cost-PT on the
        # untrained supernet, one per random order of the decisions (then `candidates` is
        # that pool's size: about 10 s each for a NAS-Bench-201 cell of 8 filters)
        "selection": "sampling",
        "constraints": {"max_parameters": None, "max_macs": None, "max_latency_ms": None,
                        "latency_table": None},
    }
    schema = {
        "proxy": PROXY_SCHEMA,
        "candidates": schema.integer(1),
        "selection": {"enum": ["sampling", "perturbation"]},
        "constraints": schema.obj(COST_LIMITS_SCHEMA),
    }
    hints = {"proxy": f"the proxies are {list(proxies.PROXIES)}"}

    @classmethod
    def check_section(cls, section):
        check_cost_limits(section["constraints"])
        names = proxy_names(section["proxy"])
        if section["selection"] == "perturbation" and (
                len(names) != 1 or names[0] not in perturbation.MEASURES[1:]):
            raise ConfigError(f"search.proxy: perturbation measures the supernet with one "
                              f"proxy of {list(perturbation.MEASURES[1:])}, got "
                              f"{section['proxy']!r}.")

    def __init__(self, config, prepared):
        super().__init__(config, prepared)
        table = self.section["constraints"]["latency_table"]
        self.latency = LatencyCost.from_table(table, self.space) if table else None

    # The tuner method's cost limits, with the same keys and meaning.
    costs = TunerSearch.costs
    excess = TunerSearch.excess

    def proxies(self):
        return proxy_names(self.section["proxy"])

    def search(self, run, verbose=2):
        start, names = time.time(), self.proxies()
        images, labels = next(iter(self.prepared.batches("train", True, epoch=0)))
        images, labels = images.numpy(), labels.numpy()
        if self.section["selection"] == "perturbation":
            candidates = self._perturbed(images, labels, names[0], verbose)
        else:
            candidates = sample_architectures(self.space, self.section["candidates"],
                                              self.config["seed"])
        print(f"== search: {len(candidates)} architectures of the {self.space.name} space "
              f"scored by {' + '.join(names)} on one batch of {len(images)} training images, "
              "untrained")
        rows = score_architectures(self.space, candidates, images, labels, names,
                                   self.config["seed"], self.costs, self.excess, verbose)
        feasible = [r for r in rows if r["feasible"]]
        if not feasible:
            limits = {k: v for k, v in self.section["constraints"].items()
                      if k in COST_LIMITS and v}
            raise ConfigError(f"None of the {len(rows)} architectures meets the constraints "
                              f"{limits}; loosen them, or raise search.candidates.")
        best = max(feasible, key=lambda r: (r["score"], -r["index"]))
        seconds = round(time.time() - start, 1)
        self._write_logs(run, rows, names)
        arch = from_choices(self.space, best["choices"], metadata={
            "method": self.name, "proxy": self.section["proxy"], "candidates": len(rows),
            "selection": self.section["selection"],
            "infeasible": len(rows) - len(feasible), "best_candidate": best["index"],
            "best_score": best["score"], "search_seconds": seconds,
            "dataset": self.config["data"]["dataset"]})
        print(f"   best: candidate {best['index']}, {names[0] if len(names) == 1 else 'vote'} "
              f"{best['score']:.6g}, {best['scores']['params']:,.0f} parameters ({seconds} s)")
        return arch, None

    def _perturbed(self, images, labels, proxy, verbose):
        """The distinct architectures of `search.candidates` Zero-Cost-PT passes."""
        seed, pool = self.config["seed"], self.section["candidates"]
        keras.utils.set_random_seed(seed)
        supernet = self.space.build_supernet("softmax")
        measure = perturbation.proxy_measure(supernet, images, labels, proxy)
        print(f"== perturbation: {pool} passes of Zero-Cost-PT by {proxy} over the "
              f"{len(perturbation.decision_blocks(supernet))} decisions of the untrained "
              "supernet")
        found, start = [], time.time()
        for k in range(pool):
            scores, _ = perturbation.select(supernet, measure, seed=seed + k)
            choices = self.space.derive(scores)
            if choices not in found:
                found.append(choices)
            if verbose:
                print(f"   pass {k + 1}/{pool}: {len(found)} distinct "
                      f"({time.time() - start:.0f} s)")
        keras.backend.clear_session(free_memory=False)
        return found

    def _write_logs(self, run, rows, names):
        columns = sorted({k for r in rows for k in r["scores"]})
        path = run.file("logs", "candidates.csv")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "choices", *columns, "score", "feasible",
                             *sorted(COST_LIMITS)])
            for r in rows:
                writer.writerow([r["index"], json.dumps(r["choices"], sort_keys=True),
                                 *[repr(r["scores"][c]) for c in columns], repr(r["score"]),
                                 r["feasible"], *[r["costs"].get(k, "") for k in
                                                  sorted(COST_LIMITS)]])
        _plot(run.file("logs", "score_vs_parameters.png"), rows,
              names[0] if len(names) == 1 else "vote of " + ", ".join(names))


def _plot(path, rows, label):
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    finite = [r for r in rows if math.isfinite(r["score"])]
    fig, ax = plt.subplots(figsize=(6, 4))
    for feasible, color in ((True, "tab:blue"), (False, "tab:gray")):
        chosen = [r for r in finite if r["feasible"] == feasible]
        if chosen:
            ax.scatter([r["scores"]["params"] for r in chosen], [r["score"] for r in chosen],
                       s=12, color=color, label="within the limits" if feasible else "over")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel(label)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
