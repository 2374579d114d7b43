"""Architectures of a space drawn at random, and ranked untrained by zero-cost proxies."""

import json
import math
import time

import keras
import numpy as np

from tfnas import proxies

# JSON Schema of a proxy setting: a name of `tfnas.proxies`, or a list of them (their vote).
PROXY_SCHEMA = {"anyOf": [{"enum": list(proxies.PROXIES)},
                          {"type": "array", "minItems": 1,
                           "items": {"enum": list(proxies.PROXIES)}}]}


def proxy_names(setting):
    """The proxies of a setting (`PROXY_SCHEMA`) as a list."""
    return [setting] if isinstance(setting, str) else list(setting)


class _Draw:
    """A keras-tuner `HyperParameters` stand-in for `SearchSpace.hyperparameters`: each
    `Choice` is a uniform draw, or, given `digits`, the value they index (enumeration);
    `values` records them by name, as a keras-tuner trial holds them."""

    def __init__(self, rng=None, digits=None):
        self.rng, self.digits, self.sizes, self.values = rng, digits, [], {}

    def Choice(self, name, values, **kwargs):  # noqa: N802  pylint: disable=invalid-name
        del kwargs
        self.sizes.append(len(values))
        if self.digits is not None:
            value = values[self.digits[len(self.sizes) - 1]]
        else:
            value = values[int(self.rng.integers(len(values)))]
        self.values[name] = value
        return value


def sample_architectures(space, count, seed, with_values=False):
    """`count` distinct `{block: choice}` of `space` (all of them, in order, when the space
    has no more), drawn through the space's hyperparameter mapping, so that every draw is
    a valid architecture (DARTS's two inputs per node). With `with_values`, pairs
    `(choices, values)`: `values` the keras-tuner hyperparameter values that give them.

    Example:

    >>> from tfnas.spaces import get_space
    >>> space = get_space("grunas", {"candidates": [1, 2]})
    >>> len(sample_architectures(space, 5, seed=0))
    5
    """
    probe = _Draw(np.random.default_rng(seed))
    space.hyperparameters(probe)
    total = math.prod(probe.sizes)
    if total <= count:  # enumerate, in mixed radix over the choices
        draws = []
        for index in range(total):
            digits = []
            for size in reversed(probe.sizes):
                index, digit = divmod(index, size)
                digits.append(digit)
            draws.append(_Draw(digits=digits[::-1]))
    else:
        rng = np.random.default_rng(seed)
        # a space with many equal encodings may run out of new ones
        draws = (_Draw(rng) for _ in range(count * 20))
    found, seen = [], set()
    for draw in draws:
        choices = space.hyperparameters(draw)
        key = json.dumps(choices, sort_keys=True)
        if key not in seen:
            seen.add(key)
            found.append((choices, draw.values) if with_values else choices)
            if len(found) == count:
                break
    return found


def score_architectures(space, candidates, images, labels, names, seed, costs, excess,
                        verbose=0):
    """Each of `candidates` (`{block: choice}`) built at initialization from `seed` and
    scored on one batch by the proxies `names` (`tfnas.proxies`): rows `{"index",
    "choices", "scores", "score", "costs", "feasible"}`, `score` the one proxy's or the
    `proxies.vote` of several. `costs(choices, model)` gives `{limit: cost}` and
    `excess(costs)` those over their limit."""
    start, rows = time.time(), []
    for index, choices in enumerate(candidates):
        keras.utils.set_random_seed(seed)  # the same draws for every one
        model = space.build_model(choices)
        scores = proxies.score(model, images, labels, proxies=sorted(set(names) | {"params"}))
        cost = costs(choices, model)
        rows.append({"index": index, "choices": choices, "scores": scores, "costs": cost,
                     "feasible": not excess(cost)})
        if verbose and (index + 1) % max(1, len(candidates) // 10) == 0:
            print(f"   {index + 1}/{len(candidates)} scored ({time.time() - start:.0f} s)")
        keras.backend.clear_session(free_memory=False)
    votes = proxies.vote([r["scores"] for r in rows], names)
    for row, value in zip(rows, votes):
        row["score"] = row["scores"][names[0]] if len(names) == 1 else value
    return rows
