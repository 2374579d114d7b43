"""Perturbation-based selection: keep, on each mixed op, the candidate the supernet
cannot do without.

Reading an architecture off the largest logit (DARTS's argmax) trusts α, and α is what
collapses to parameter-free cells. Perturbation-based selection asks the supernet
instead (Xiang et al., AAAI 2023). Visiting the decisions in a random order, for each candidate in
turn it switches that candidate off and measures the supernet. It keeps the candidate
whose removal lowers the measure most, and fixes it before moving to the next
decision.

- DARTS-PT (Wang et al., ICLR 2021): the trained supernet's validation accuracy
  (`accuracy_measure`).
- Zero-Cost-PT (Xiang et al., AAAI 2023): a zero-cost proxy of the supernet on one batch
  (`proxy_measure`), which needs no training at all.

While it measures, every mixed op mixes with given weights, whatever the supernet's
rule: an undecided op uses softmax(α), with the switched-off candidate's weight set to
0 and the others left as they are (not renormalized); a decided op uses the one-hot
vector of the candidate it kept. Ops that share another op's logits (the cells of
NAS-Bench-201 and DARTS) follow that op's decision. The weights given are variables, so
a traced measure is traced once. DARTS-PT's fine-tuning between decisions is not done
here.

Example:

>>> from tfnas.spaces import get_space
>>> space = get_space("nasbench201", {"filters": 4, "cells_per_stage": 1})
>>> supernet = space.build_supernet("softmax")
>>> images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
>>> scores, _ = select(supernet, proxy_measure(supernet, images, proxy="naswot"), seed=0)
>>> sorted(space.derive(scores)) == sorted(space.blocks())
True
"""

import contextlib

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfnas.layers.mixed_op import mixed_ops
from tfnas.layers.mixing import MixingRule

# DARTS-PT's validation accuracy, and the proxies of tfnas.proxies that score a supernet as
# its mixing weights change (synflow rebuilds the network from its config, which a supernet
# with shared logits does not allow; params and flops do not change).
MEASURES = ("accuracy", "naswot", "snip", "grad_norm", "grasp", "fisher", "jacob_cov")


class _GivenWeights(MixingRule):
    """Mixes each op with the weights in its state variable (set from outside). Run
    eagerly, a candidate whose weight is 0 is not run at all: a switched-off candidate
    leaves no trace in what a proxy records (NASWOT's ReLU codes)."""

    def mixing_weights(self, logits, training=None):
        return logits

    def combine(self, logits, candidates, inputs, training=None, state=None,
                rematerialize=False):
        del logits, rematerialize
        if tf.executing_eagerly():
            weights = state.numpy()
            # (When only `none` is left, every candidate runs, weighted 0: a zero output.)
            if any(w != 0 and not getattr(c, "always_zero", False)
                   for c, w in zip(candidates, weights)):
                candidates = [c if w != 0 else _Zero() for c, w in zip(candidates, weights)]
        return super().combine(state, candidates, inputs, training=training)


class _Zero:
    """Stands for a switched-off candidate: `MixingRule.combine` leaves it out of the sum."""

    always_zero = True


@contextlib.contextmanager
def given_weights(supernet):
    """Within, every mixed op of `supernet` mixes with given weights: yields `{op name:
    variable}` of the ops that own logits (an op that shares another's logits reads the
    owner's variable), each set to softmax(α). Every op's rule is put back on exit."""
    rule, owned, saved = _GivenWeights(), {}, []
    every = mixed_ops(supernet)
    for op in every:
        if op.owns_logits:
            owned[op.name] = keras.Variable(ops.convert_to_numpy(ops.softmax(op.logits)),
                                            trainable=False, name=f"{op.name}_given")
    try:
        for op in every:
            owner = op.name if op.owns_logits else op._logits_from.name  # pylint: disable=protected-access
            saved.append((op, op.mixing, op.mixing_state))
            # Not tracked: the op keeps its own rule as a sublayer.
            object.__setattr__(op, "mixing", rule)
            object.__setattr__(op, "mixing_state", owned[owner])
        yield owned
    finally:
        for op, mixing, state in saved:
            object.__setattr__(op, "mixing", mixing)
            object.__setattr__(op, "mixing_state", state)


def select(supernet, measure, seed=0, log=None):
    """Perturbation-based selection over the mixed ops of `supernet` that own logits.

    `measure()` scores the supernet as its ops' given weights stand (larger is better).
    Returns `(scores, decisions)`: `scores` maps each op to a distribution over its
    candidates whose most probable one is the candidate kept (a softmax of the drops in
    the measure, standardized per op, so that a space's `derive` can rank the
    alternatives under a budget), and `decisions` lists, in the order visited,
    `{"block", "kept", "drops"}`. The supernet's weights and logits are unchanged.
    """
    rng = np.random.default_rng(seed)
    scores, decisions = {}, []
    with given_weights(supernet) as given:
        for name in rng.permutation(sorted(given)):
            variable = given[name]
            weights = variable.numpy()
            base = float(measure())
            drops = []
            for i in range(len(weights)):
                off = weights.copy()
                off[i] = 0.0
                variable.assign(off)
                drops.append(base - float(measure()))
            drops = np.asarray(drops, "float64")
            if not np.all(np.isfinite(drops)):
                raise ArithmeticError(f"{name}: the measure was not finite with a candidate "
                                      f"switched off (drops {drops.tolist()}).")
            kept = int(np.argmax(drops))
            variable.assign(np.eye(len(weights), dtype=weights.dtype)[kept])
            spread = drops.std() or 1.0
            z = (drops - drops.mean()) / spread
            scores[str(name)] = [round(float(p), 6) for p in np.exp(z) / np.exp(z).sum()]
            decisions.append({"block": str(name), "kept": kept,
                              "drops": [float(d) for d in drops]})
            if log:
                log(f"{name}: kept candidate {kept} of {len(weights)} (drops "
                    f"{', '.join(f'{d:.4g}' for d in drops)})")
    return {name: scores[name] for name in decision_blocks(supernet)}, decisions


def decision_blocks(supernet):
    """The names of the mixed ops whose candidate `select` decides (those owning logits)."""
    return [op.name for op in mixed_ops(supernet) if op.owns_logits]


def _logits_model(supernet):
    """The supernet's logits alone (its first output), as a model of the same layers."""
    inputs = supernet.inputs[0] if len(supernet.inputs) == 1 else supernet.inputs
    return keras.Model(inputs, supernet.outputs[0], name=f"{supernet.name}_logits")


def accuracy_measure(supernet, batches):
    """DARTS-PT's measure: the accuracy of `supernet` over `batches` of `(images, labels)`,
    batch norm in training mode (on each batch's statistics); the batch norms' moving
    statistics are put back after each call."""
    batches = [(tf.convert_to_tensor(x), tf.convert_to_tensor(y)) for x, y in batches]
    if not batches:
        raise ValueError("accuracy_measure needs at least one validation batch.")
    from tfnas.proxies import weights_kept  # pylint: disable=import-outside-toplevel

    model = _logits_model(supernet)
    step = tf.function(lambda x: model(x, training=True), autograph=False)

    def measure():
        correct = total = 0
        with weights_kept(supernet):
            for x, y in batches:
                predicted = tf.argmax(step(x), axis=-1, output_type=tf.int64)
                correct += int(tf.reduce_sum(tf.cast(predicted == tf.cast(
                    tf.reshape(y, [-1]), tf.int64), tf.int32)))
                total += int(x.shape[0])
        return correct / total
    return measure


def proxy_measure(supernet, images, labels=None, proxy="naswot"):
    """Zero-Cost-PT's measure: `tfnas.proxies.score` of the supernet on one batch."""
    from tfnas import proxies  # pylint: disable=import-outside-toplevel

    if proxy not in MEASURES[1:]:
        raise ValueError(f"Perturbation cannot measure with {proxy!r}; its proxies are "
                         f"{list(MEASURES[1:])} (synflow rebuilds the network from its "
                         "config, which a supernet with shared logits does not allow; params "
                         "and flops do not change when a candidate is switched off).")
    model = _logits_model(supernet)
    return lambda: proxies.score(model, images, labels, proxies=(proxy,))[proxy]
