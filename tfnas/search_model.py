"""The search model: alternating weight and architecture updates, each phase traced once."""

import contextlib

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfnas import penalties
from tfnas.distribute import (check_replicable, scale_loss, synchronize_batch_norms,
                              unscale_loss)
from tfnas.costs import ParameterCost
from tfnas.layers.mixed_op import distributions, mixed_ops

WEIGHTS, ARCHITECTURE = 0, 1


class SearchModel(keras.Model):
    """Differentiable architecture search, used with `compile` and `fit`.

    Every element of the training data carries a phase: `(x, y, 0)` updates
    the weights with `optimizer`, `(x, y, 1)` updates the architecture logits
    with `arch_optimizer`. Both run one forward pass of the supernet and the
    same loss, `penalty(cross_entropy, expected_cost)`; the two optimizers are
    built on disjoint variable lists, so weight decay meant for the weights
    never touches the architecture. `fit(train, arch_data=val)` makes the phase
    schedule: `alternation="step"` interleaves a weight step on a training
    batch with an architecture step on a validation batch (DARTS first order);
    `"epoch"` makes each epoch a full pass on the training split followed by a
    full pass on the validation split (the GRUNAS reference). During the first
    `warmup_epochs` only the weights are trained.

    `fit` traces one step function per phase, each once, and sends every
    element to the function of its phase: one graph holding both the weight
    and the architecture gradients behind a conditional took 1.4x the peak
    memory of the two graphs apart (DARTS, `benchmarks/darts_step.py`).
    Schedule values (temperature, warm-up switch, Lagrange multipliers) are
    variables that callbacks and the steps assign, so nothing retraces.
    `train_step` also accepts the phase as a tensor, for custom loops.

    Args:
        supernet: a model `x -> (logits, {block: mixing weights})`, as made by
            `SearchSpace.build_supernet`.
        cost: a `tfnas.costs.Cost`; default the trainable parameter count.
        penalty: a `tfnas.penalties.Penalty` or its config; default none.
        rematerialize: recompute the mixed ops' activations in the backward pass
            instead of keeping them (`MixedOp(rematerialize=True)` on every op):
            less memory per step for more compute.

    Example:

    >>> from tfnas.spaces import get_space
    >>> search = SearchModel(get_space("grunas").build_supernet(),
    ...                      penalty={"type": "threshold", "beta": 0.8})
    >>> search.compile(optimizer="sgd", arch_optimizer="adam")
    >>> len(search.architecture_variables)
    10
    """

    def __init__(self, supernet, cost=None, penalty=None, rematerialize=False, **kwargs):
        super().__init__(**kwargs)
        self.supernet = supernet
        self.mixed_ops = mixed_ops(supernet)
        for op in self.mixed_ops:  # read when a step is traced
            op.rematerialize = op.rematerialize or rematerialize
        if not self.mixed_ops:
            raise ValueError("The supernet has no MixedOp layers: nothing to search.")
        # The ops whose logits an architecture step updates (others share them).
        self.logit_ops = [op for op in self.mixed_ops if op.owns_logits]
        self.cost = cost or ParameterCost.from_supernet(supernet)
        self.penalty = penalties.get(penalty)
        # Tracked, so that backups save and restore it (a Lagrange multiplier).
        self.penalty_variables = list(self.penalty.variables)
        self.arch_updates_enabled = keras.Variable(True, dtype="bool", trainable=False,
                                                   name="arch_updates_enabled")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="cross_entropy")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.cost_tracker = keras.metrics.Mean(name="expected_cost")
        self.arch_loss_tracker = keras.metrics.Mean(name="arch_loss")
        rules = {id(op.mixing): op.mixing for op in self.mixed_ops}
        self.mixing_rules = list(rules.values())
        self.arch_optimizer = None
        self.built = True  # the supernet is a functional model, built already

    @property
    def architecture_variables(self):
        return [v for op in self.logit_ops for v in op.architecture_variables]

    @property
    def weight_variables(self):
        arch = {id(v) for v in self.architecture_variables}
        return [v for v in self.supernet.trainable_variables if id(v) not in arch]

    @property
    def metrics(self):
        return [self.loss_tracker, self.ce_tracker, self.accuracy_tracker, self.cost_tracker,
                self.arch_loss_tracker]

    def call(self, inputs, training=False):
        return self.supernet(inputs, training=training)[0]

    def compile(self, optimizer="sgd", arch_optimizer="adam", loss=None, **kwargs):
        """Like `keras.Model.compile`, with a second optimizer for the architecture.

        `loss` defaults to sparse categorical cross-entropy on logits. Metrics
        are fixed (loss, cross_entropy, accuracy, expected_cost, arch_loss,
        temperature); `metrics=` is not accepted.
        """
        if "metrics" in kwargs:
            raise ValueError("SearchModel reports its own metrics; do not pass metrics=.")
        super().compile(optimizer=optimizer, **kwargs)
        self.ce_loss = loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.ce_loss = keras.losses.get(self.ce_loss)
        self.arch_optimizer = keras.optimizers.get(arch_optimizer)
        # Keras optimizers only update the variables they were built with.
        self.optimizer.build(self.weight_variables)
        self.arch_optimizer.build(self.architecture_variables)
        self._held = self._candidates_held_when_idle()

    def _candidates_held_when_idle(self):
        """`(op, j, variables)` of candidates that a weight step may leave out.

        A candidate that did not run in a weight step must not change in it:
        its gradient is zero, but weight decay and momentum would still move
        its weights (PyTorch skips parameters whose gradient is None). The
        variables are the candidate's trainable weights and their optimizer
        slots (momentum, Adam moments).
        """
        held = []
        for op in self.mixed_ops:
            if not op.mixing.partial_execution:
                continue
            for j, candidate in enumerate(op.candidates):
                variables = []
                for v in candidate.trainable_variables:
                    variables += [v] + _optimizer_slots(self.optimizer, v)
                held.append((op, j, variables))
        return held

    def _forward(self, x, y):
        logits, mixing_weights = self.supernet(x, training=True)
        # Keras losses divide by the replicas (tf.distribute sums the gradients); the
        # penalty sees the batch's cross-entropy, and the whole loss is divided instead.
        ce = unscale_loss(self.ce_loss(y, logits))
        cost = self.cost(mixing_weights)
        return self.penalty(ce, cost), ce, cost, logits

    def _update(self, x, y, variables, optimizer):
        with tf.GradientTape() as tape:
            loss, ce, cost, logits = self._forward(x, y)
            scaled = scale_loss(loss)
        optimizer.apply(tape.gradient(scaled, variables), variables)
        return loss, ce, cost, logits

    def _weight_step(self, x, y):
        before = [[ops.copy(v) for v in variables] for _, _, variables in self._held]
        loss, ce, cost, logits = self._update(x, y, self.weight_variables, self.optimizer)
        for (op, j, variables), values in zip(self._held, before):
            ran = op.mixing.executed(op.mixing_state, len(op.candidates))[j]
            for v, old in zip(variables, values):
                v.assign(ops.where(ran, v, old))
        self.loss_tracker.update_state(loss)
        self.ce_tracker.update_state(ce)
        self.cost_tracker.update_state(cost)
        self.accuracy_tracker.update_state(y, logits)
        return ops.convert_to_tensor(0)

    def _arch_step(self, x, y):
        old_logits = [ops.copy(op.logits) for op in self.logit_ops]
        with contextlib.ExitStack() as stack:
            # Binary gates trace their gate gradients only into this branch.
            for rule in self.mixing_rules:
                stack.enter_context(rule.architecture_step())
            loss, _, cost, _ = self._update(x, y, self.architecture_variables,
                                            self.arch_optimizer)
        for op, old in zip(self.logit_ops, old_logits):
            op.mixing.after_update(op.logits, old, state=op.mixing_state)
        self.penalty.update(cost)
        self.arch_loss_tracker.update_state(loss)
        return ops.convert_to_tensor(0)

    @property
    def learns_architecture(self):
        return any(rule.learns_architecture for rule in self.mixing_rules)

    def train_step(self, data):
        """One step on `(x, y, phase)`; `phase` a Python int (as `fit` sends it,
        one traced function per phase) or a tensor, a scalar or one per example (a
        graph conditional)."""
        x, y, phase = _unpack_phased(data)
        if not self.learns_architecture:
            self._weight_step(x, y)  # every batch trains the weights of the chosen path
            return self._logs()
        if isinstance(phase, int):
            # fit's dispatch skips architecture batches during the warm-up: under
            # tf.distribute an optimizer step cannot sit in a graph conditional.
            if phase == WEIGHTS:
                self._weight_step(x, y)
            else:
                self._arch_step(x, y)
        else:
            enabled = ops.logical_and(self.arch_updates_enabled, True)  # the variable, read
            arch_step = lambda: ops.cond(enabled, lambda: self._arch_step(x, y),  # noqa: E731
                                         lambda: ops.convert_to_tensor(0))
            phase = ops.reshape(phase, [-1])[0]  # a batch's phase, or one per example
            ops.cond(ops.equal(phase, WEIGHTS), lambda: self._weight_step(x, y), arch_step)
        return self._logs()

    def make_train_function(self, force=False):
        """Keras's step function, made once per phase; elements go to their phase's."""
        if self.train_function is not None and not force:
            return self.train_function
        check_replicable(self.supernet)
        synchronize_batch_norms(self.supernet)
        if self.run_eagerly:
            return super().make_train_function(force)
        # Keras's own per-batch function (tracing, distribution, reduction of
        # the logs), called on a one-element list so that this dispatch can
        # read each element's phase first.
        steps = [self._make_function(lambda data, phase=phase: self.train_step(
            _unpack_phased(data)[:2] + (phase,))) for phase in (WEIGHTS, ARCHITECTURE)]
        idle = self._make_function(lambda data: self._logs())  # a skipped batch's logs
        strategy = self.distribute_strategy

        def function(iterator):
            logs = None
            for _ in range(self.steps_per_execution):
                try:
                    data = next(iterator)
                except (StopIteration, tf.errors.OutOfRangeError):
                    if logs is None:
                        raise StopIteration  # pylint: disable=raise-missing-from
                    break
                phase = WEIGHTS
                if self.learns_architecture:
                    phase = int(np.reshape(strategy.experimental_local_results(
                        _unpack_phased(data)[2])[0], [-1])[0])
                if phase == ARCHITECTURE and not bool(self.arch_updates_enabled.numpy()):
                    logs = idle([data])  # the warm-up: weights only
                else:
                    logs = steps[phase]([data])
            return logs

        self.train_function = function
        return function

    def _logs(self):
        logs = {m.name: m.result() for m in self.metrics}
        for source in self.mixing_rules + [self.penalty]:
            logs.update({k: ops.convert_to_tensor(v) for k, v in source.logged_values().items()})
        return logs

    def test_step(self, data):
        x, y = data[0], data[1]
        logits = self(x, training=False)
        ce = unscale_loss(self.ce_loss(y, logits))
        self.ce_tracker.update_state(ce)
        self.loss_tracker.update_state(ce)
        self.accuracy_tracker.update_state(y, logits)
        return {"loss": self.loss_tracker.result(), "cross_entropy": self.ce_tracker.result(),
                "accuracy": self.accuracy_tracker.result()}

    def fit(self, x=None, arch_data=None, alternation="step", warmup_epochs=0, callbacks=None,
            arch_every=1, **kwargs):
        """`keras.Model.fit` with the search schedule.

        Args:
            x: the training split (batched `(x, y)` dataset), or a dataset
                already made by `tfnas.data.search_schedule` (then leave
                `arch_data` out).
            arch_data: the split for architecture updates (batched `(x, y)`).
            alternation: `"step"` or `"epoch"` (see the class docstring).
            warmup_epochs: epochs of weight-only training before architecture
                updates start.
            arch_every: with `"step"`, weight steps per architecture step (1:
                DARTS, NNI; 5: the official ProxylessNAS code).

        Other arguments go to `keras.Model.fit`.
        """
        from tfnas.callbacks import ArchitectureWarmup  # pylint: disable=import-outside-toplevel
        from tfnas.data import search_schedule  # pylint: disable=import-outside-toplevel

        if self.arch_optimizer is None:
            raise RuntimeError("Call compile(optimizer=..., arch_optimizer=...) before fit.")
        if arch_data is not None:
            x = search_schedule(x, arch_data, alternation=alternation, arch_every=arch_every)
        callbacks = list(callbacks or [])
        callbacks.insert(0, ArchitectureWarmup(warmup_epochs))
        kwargs.setdefault("shuffle", False)  # datasets shuffle themselves
        return super().fit(x, callbacks=callbacks, **kwargs)

    def schedule_callbacks(self, start_epoch=0):
        """The callbacks of the mixing rules' schedules (the Gumbel temperature)."""
        return [cb for rule in self.mixing_rules for cb in rule.schedule_callbacks(start_epoch)]

    def derive_architecture(self, space, metadata=None, limits=None, scores=None):
        """The architecture document the space derives from the current probabilities (or
        from `scores` of the candidates, `tfnas.perturbation.select`); with
        `limits=(low, high)`, the most probable one whose cost lies within them."""
        from tfnas.architecture import derive  # pylint: disable=import-outside-toplevel

        return derive(self.supernet, space, metadata,
                      cost=self.cost if limits is not None else None, limits=limits,
                      scores=scores)

    def derived_cost(self, space, choices=None):
        """The cost of architecture `choices` of `space`, by default of the one `space`
        derives from the current probabilities."""
        if choices is None:
            choices = space.derive(self.probabilities())
        return self.cost.of_choices(space.effective_choices(choices))

    def probabilities(self):
        """`{block: probabilities}` as lists of floats."""
        return {b: [float(p) for p in probs]
                for b, (_, probs) in distributions(self.mixed_ops).items()}

    def expected_cost(self):
        """The cost under the current probabilities (no sampling)."""
        return float(self.cost({op.name: op.probabilities() for op in self.mixed_ops}))


def _unpack_phased(data):
    if not (isinstance(data, (tuple, list)) and len(data) == 3):
        raise ValueError(
            "SearchModel trains on (x, y, phase) elements. Call "
            "fit(train_data, arch_data=val_data) or build the data with "
            "tfnas.data.search_schedule(train_data, val_data).")
    return tuple(data)


def _optimizer_slots(optimizer, variable):
    """The optimizer's per-variable state of `variable` (momentum, moments, ...).

    Keras optimizers keep each kind of slot in a list aligned with the
    variables they were built with; every such list is collected.
    """
    variables = optimizer._trainable_variables  # pylint: disable=protected-access
    index = optimizer._get_variable_index(variable)  # pylint: disable=protected-access
    slots = []
    for value in vars(optimizer).values():
        if (isinstance(value, list) and value is not variables and len(value) == len(variables)
                and all(isinstance(s, keras.Variable) for s in value)):
            slots.append(value[index])
    return slots
