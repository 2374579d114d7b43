"""ProxylessNAS binary gates: one sampled path per step, BinaryConnect gradient for alpha.

Cai, Zhu and Han, "ProxylessNAS: Direct neural architecture search on target
task and hardware", ICLR 2019; the official code's modes `full_v2` (one path,
the default here) and `two` (as ProxylessNAS's code names them).

Weight steps run only the sampled candidate (`run_candidate`, a graph-level
`Case`): the other candidates are not computed, and no activation of theirs is
kept for the backward pass. Architecture steps (inside `architecture_step()`,
which `SearchModel` enters while it traces its architecture branch) add the
gate term

    out = o_k(x) + sum_j (g_j - stop_gradient(g_j)) * stop_gradient(o_j(x))

whose value is zero and whose gradient is dL/dg_j = sum(o_j(x) * dL/dout):
the candidates are evaluated forward only, so the step keeps their outputs
but none of their internal activations. With `g = p` straight-through (p the
softmax of the logits), autodiff gives the BinaryConnect gradient
dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i) of the official code.
"""

import contextlib

import keras
from keras import ops

from tfnas.layers.mixing import RULES, MixingRule, add_gumbel_noise, run_candidate


@keras.saving.register_keras_serializable(package="tfnas")
class BinaryGateMixing(MixingRule):
    """Binary gates over the candidates of each `MixedOp`.

    Args:
        paths: `1` samples one path from softmax(alpha) (`full_v2`); `2`
            samples two candidates without replacement, gates them with the
            softmax over those two only and, after each architecture update,
            shifts their two logits so the other candidates keep their
            probabilities (`two`). Two-path architecture steps run two
            candidates instead of all of them.
        seed: seed of the path sampling.
        reproducible: run the sampled candidate as one function call instead of the
            faster lowered switch (default; see `run_candidate`).

    In inference (`training=False`) the most probable candidate runs. In
    architecture steps every evaluated candidate runs in training mode, so its
    BatchNorm statistics see the validation batch, as in the official code's
    recomputation.

    Example:

    >>> from tfnas.layers import MixedOp
    >>> rule = BinaryGateMixing(seed=0)
    >>> op = MixedOp([keras.layers.Dense(2), keras.layers.Dense(2)], mixing=rule)
    >>> y, p = op(keras.ops.ones((1, 3)), training=True)
    >>> tuple(y.shape), keras.ops.convert_to_numpy(p).round(2).tolist()
    ((1, 2), [0.5, 0.5])
    """

    def __init__(self, paths=1, seed=None, reproducible=False, **kwargs):
        super().__init__(**kwargs)
        self.reproducible = bool(reproducible)
        if paths not in (1, 2):
            raise ValueError(f"BinaryGateMixing: paths must be 1 or 2, got {paths!r}.")
        self.paths = int(paths)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._gate_gradients = False

    @contextlib.contextmanager
    def architecture_step(self):
        previous, self._gate_gradients = self._gate_gradients, True
        try:
            yield
        finally:
            self._gate_gradients = previous

    def mixing_weights(self, logits, training=None):
        return ops.softmax(logits)

    # Weight steps run one candidate: `SearchModel` keeps the others' weights and
    # optimizer slots as they were (no weight decay, no momentum drift).
    partial_execution = True

    def build_state(self, op):
        # The candidate a weight step ran, and (two paths) the pair sampled in the last
        # architecture step, for the rescaling after the update.
        state = {"executed": op.add_weight(name="executed_path", shape=(), dtype="int32",
                                           initializer="zeros", trainable=False)}
        if self.paths == 2:
            state["pair"] = op.add_weight(name="sampled_paths", shape=(2,), dtype="int32",
                                          initializer="zeros", trainable=False)
        return state

    def combine(self, logits, candidates, inputs, training=None, state=None):
        probs = ops.softmax(logits)

        def sample(scores):  # the argmax of Gumbel-perturbed scores ~ softmax(scores)
            return ops.cast(ops.argmax(add_gumbel_noise(scores, self.seed_generator)), "int32")

        def run(index):
            return run_candidate(index, candidates, inputs, training, self.reproducible)

        if not training:
            return run(ops.cast(ops.argmax(logits), "int32")), probs
        if self.paths == 1:
            index = sample(logits)
            outputs = run(index)
            if not self._gate_gradients:
                state["executed"].assign(index)
            else:
                gates = ops.one_hot(index, len(candidates)) + probs - ops.stop_gradient(probs)
                for j, candidate in enumerate(candidates):
                    o_j = ops.stop_gradient(candidate(inputs, training=training))
                    outputs = outputs + (gates[j] - ops.stop_gradient(gates[j])) * o_j
            return outputs, probs
        # Two paths: a pair without replacement (Gumbel top-2), then one of the pair
        # with the softmax over the pair.
        pair = ops.cast(ops.top_k(add_gumbel_noise(logits, self.seed_generator), 2)[1],
                        "int32")
        pair_probs = ops.softmax(ops.take(logits, pair))
        active = sample(ops.log(pair_probs))
        outputs = run(ops.take(pair, active))
        if not self._gate_gradients:
            state["executed"].assign(ops.take(pair, active))
        else:
            state["pair"].assign(pair)
            gates = ops.one_hot(active, 2) + pair_probs - ops.stop_gradient(pair_probs)
            for j in range(2):
                o_j = ops.stop_gradient(run(pair[j]))
                outputs = outputs + (gates[j] - ops.stop_gradient(gates[j])) * o_j
        return outputs, probs

    def after_update(self, logits, old_logits, state=None):
        """Two paths: keep the probabilities of the candidates outside the sampled pair."""
        if self.paths == 1:
            return
        pair = state["pair"]
        shift = (ops.logsumexp(ops.take(logits, pair))
                 - ops.logsumexp(ops.take(old_logits, pair)))
        mask = ops.sum(ops.one_hot(pair, ops.shape(logits)[0]), axis=0)
        logits.assign(logits - shift * mask)

    def get_config(self):
        return {**super().get_config(), "paths": self.paths, "seed": self.seed,
                "reproducible": self.reproducible}


@RULES.register("binary")
def _binary(reproducible=False, seed=None):
    return BinaryGateMixing(paths=1, seed=seed, reproducible=reproducible, name="mixing")


@RULES.register("binary_two")
def _binary_two(reproducible=False, seed=None):
    return BinaryGateMixing(paths=2, seed=seed, reproducible=reproducible, name="mixing")
