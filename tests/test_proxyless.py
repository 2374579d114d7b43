"""ProxylessNAS binary gates, the ResNet-50 search space, latency-aware losses, convergence stop."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from tfnas import penalties
from tfnas.callbacks import ArchitectureLogger, ConvergenceStop
from tfnas.costs import Cost, MacsCost
from tfnas.costs import LatencyCost
from tfnas.deploy.latency import LatencyTableError
from tfnas.layers import BinaryGateMixing, MixedOp
from tfnas.macs import count_macs
from tfnas.search_model import SearchModel
from tfnas.spaces import SearchSpaceError, get_space

SMALL = {"stem": "cifar", "width_multiplier": 0.0625, "input_shape": [16, 16, 3]}


# -- ResNet-50 and the search scopes --------------------------------------------------------

def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("stem, expected", [("imagenet", 23_528_522), ("cifar", 23_520_842)])
def test_resnet50_has_torchvision_parameter_counts(stem, expected):
    space = get_space("resnet50", {"stem": stem})
    model = space.build_model({b: "k3_relu" for b in space.blocks()})
    assert _trainable(model) == expected
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 53 and not any(c.use_bias for c in convs)  # 49 + 4 downsamples


@pytest.mark.parametrize("scope, blocks", [("s", 3), ("m", 9), ("l", 13), ("f", 16)])
def test_scopes_replace_bottlenecks_from_the_deepest_stage(scope, blocks):
    space = get_space("resnet50", {"scope": scope})
    assert len(space.blocks()) == blocks
    assert space.blocks()[-1] == "layer4_2"
    assert len(space.candidates("layer4_2")) == 6


def test_a_5x5_block_adds_exactly_its_extra_kernel_weights():
    space = get_space("resnet50", {"stem": "cifar"})
    base = _trainable(space.build_model({"layer4_0": "k3_relu", "layer4_1": "k3_relu",
                                         "layer4_2": "k3_relu"}))
    bigger = _trainable(space.build_model({"layer4_0": "k5_mish", "layer4_1": "k3_relu",
                                           "layer4_2": "k3_relu"}))
    assert bigger - base == (25 - 9) * 512 * 512


@pytest.mark.parametrize("config, message", [
    ({"scope": "x"}, "unknown search scope 'x'"),
    ({"kernels": [3, 4]}, "odd positive integers"),
    ({"activations": ["relu", "swish"]}, "unknown activations ['swish']"),
    ({"kernels": [3], "activations": ["relu"]}, "fewer than two candidates"),
])
def test_bad_space_configs_are_clear_errors(config, message):
    with pytest.raises(SearchSpaceError, match=None) as err:
        get_space("resnet50", config)
    assert message in str(err.value)


@pytest.mark.parametrize("choice, message", [
    ("k7_relu", "kernel 7 is not in this space's kernels [3, 5]"),
    ("k3_gelu", "activation 'gelu' is not in this space's activations"),
    ("relu", "is not a search unit choice"),
])
def test_choices_outside_the_candidate_set_are_clear_errors(choice, message):
    space = get_space("resnet50", {"scope": "s"})
    with pytest.raises(SearchSpaceError) as err:
        space.build_model({"layer4_0": choice, "layer4_1": "k3_relu", "layer4_2": "k3_relu"})
    assert message in str(err.value)


def test_supernet_inherits_into_the_derived_model_and_macs_cost_is_exact():
    space = get_space("resnet50", {**SMALL, "scope": "m"})
    supernet = space.build_supernet("binary")
    x = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    choices = {b: space.candidates(b)[i % 6] for i, b in enumerate(space.blocks())}
    for block, choice in choices.items():  # make the supernet run the chosen paths
        op = supernet.get_layer(block)
        op.logits.assign(np.where(np.array(op.choices) == choice, 5.0, 0.0))
    model = space.build_model(choices)
    space.inherit_weights(model, supernet, choices)
    np.testing.assert_allclose(model(x, training=False), supernet(x, training=False)[0],
                               rtol=1e-4, atol=1e-4)
    cost = MacsCost.from_space(space)
    assert cost.of_choices(choices) == count_macs(model)


# -- binary gates ---------------------------------------------------------------------------

class Counting(keras.layers.Layer):
    """x * scale; counts its executions in a variable (Python counts traces, not runs)."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.runs = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                    name="runs")

    def call(self, x):
        self.runs.assign_add(1.0)
        return x * self.scale

    def compute_output_shape(self, input_shape):
        return input_shape


def _counting_op(paths, n=4):
    candidates = [Counting(float(i + 1), name=f"c{i}") for i in range(n)]
    op = MixedOp(candidates, mixing=BinaryGateMixing(paths=paths, seed=0), name="op")
    op.build((None, 3))
    return op, candidates


def _runs(candidates):
    return [float(c.runs.numpy()) for c in candidates]


@pytest.mark.parametrize("paths", [1, 2])
def test_weight_steps_run_only_the_sampled_candidate(paths):
    op, candidates = _counting_op(paths)
    step = tf.function(lambda x: op(x, training=True)[0])
    for _ in range(5):
        step(tf.ones((2, 3)))
    assert sum(_runs(candidates)) == 5  # one candidate per call, traced once
    tf.function(lambda x: op(x, training=False)[0])(tf.ones((2, 3)))
    assert sum(_runs(candidates)) == 6


@pytest.mark.parametrize("paths, runs_per_step", [(1, 1 + 4), (2, 1 + 2)])
def test_architecture_steps_evaluate_gate_outputs_forward_only(paths, runs_per_step):
    op, candidates = _counting_op(paths)
    with op.mixing.architecture_step():
        step = tf.function(lambda x: op(x, training=True)[0])
        step(tf.ones((2, 3)))
    assert sum(_runs(candidates)) == runs_per_step


def test_alpha_gets_the_binaryconnect_gradient():
    op, candidates = _counting_op(paths=1)
    op.logits.assign([0.3, -0.2, 0.5, 0.0])
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 3)), tf.float32)
    c = tf.constant(np.random.default_rng(1).normal(size=(2, 3)), tf.float32)
    with op.mixing.architecture_step(), tf.GradientTape() as tape:
        out, _ = op(x, training=True)
        loss = tf.reduce_sum(out * c)  # dL/dout = c whichever path ran
    grad = tape.gradient(loss, op.logits).numpy()
    g = np.array([float(tf.reduce_sum(x * cand.scale * c)) for cand in candidates])
    p = ops.convert_to_numpy(ops.softmax(op.logits))
    expected = [sum(g[j] * p[j] * ((i == j) - p[i]) for j in range(4)) for i in range(4)]
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)


def _toy_supernet(mixing, identical=False):
    """x -> MixedOp -> Dense. Candidate 0 keeps the signal, the others destroy it."""
    inputs = keras.Input((8,))
    if identical:
        candidates = [keras.layers.Identity(name=f"same{i}") for i in range(3)]
    else:
        candidates = [keras.layers.Dense(8, name="good")] + [
            keras.layers.Rescaling(0.0, name=f"bad{i}") for i in range(3)]
    h, w = MixedOp(candidates, mixing=mixing, name="op")(inputs)
    return keras.Model(inputs, (keras.layers.Dense(2, name="head")(h), {"op": w}))


def _toy_data(seed=0, n=1024):
    x = np.random.default_rng(seed).normal(size=(n, 8)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(64)


class CountingSearchModel(SearchModel):
    traces = 0

    def train_step(self, data):
        CountingSearchModel.traces += 1  # Python runs only while tracing
        return super().train_step(data)


@pytest.mark.parametrize("mixing", ["binary", "binary_two"])
def test_binary_gates_converge_to_the_better_candidate_with_one_trace(mixing):
    CountingSearchModel.traces = 0
    model = CountingSearchModel(_toy_supernet(BinaryGateMixing(
        paths=1 if mixing == "binary" else 2, seed=1, name="mixing")))
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  arch_optimizer=keras.optimizers.Adam(0.05, beta_1=0.0, beta_2=0.999))
    model.fit(_toy_data(), arch_data=_toy_data(1), epochs=4, verbose=0)
    p = model.probabilities()["op"]
    assert int(np.argmax(p)) == 0 and p[0] > 0.8, p
    assert CountingSearchModel.traces == 2  # once per phase


def test_two_path_update_keeps_the_other_candidates_probabilities():
    inputs = keras.Input((8,))
    h, w = MixedOp([keras.layers.Rescaling(s, name=f"x{s}") for s in (1.0, -1.0, 0.5, 2.0)],
                   mixing=BinaryGateMixing(paths=2, seed=3), name="op")(inputs)
    model = SearchModel(keras.Model(inputs, (keras.layers.Dense(2)(h), {"op": w})))
    model.compile(optimizer="sgd", arch_optimizer=keras.optimizers.Adam(0.1))
    op = model.mixed_ops[0]
    op.logits.assign([0.1, -0.3, 0.2, 0.0])
    before = ops.convert_to_numpy(op.probabilities())
    x, y = next(iter(_toy_data()))
    tf.function(model.train_step)((x, y, tf.constant(1)))
    after = ops.convert_to_numpy(op.probabilities())
    pair = set(op.mixing_state["pair"].numpy().tolist())
    others = [i for i in range(4) if i not in pair]
    assert len(pair) == 2
    np.testing.assert_allclose(after[others], before[others], rtol=1e-5)
    assert not np.allclose(after[list(pair)], before[list(pair)])


def _slot_of(slot, variable):
    # Keras names a slot "<optimizer>/<variable path with _>_<kind>".
    return slot.path.split("/", 1)[-1].startswith(variable.path.replace("/", "_") + "_")


@pytest.mark.parametrize("paths", [1, 2])
@pytest.mark.parametrize("optimizer", [
    # the presnet50 recipes' weight optimizer, and the decoupled-decay ones
    lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
    lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),
], ids=["sgd_nesterov_wd", "adamw"])
def test_candidates_that_did_not_run_do_not_move(paths, optimizer):
    inputs = keras.Input((8,))
    candidates = [keras.layers.Dense(4, name=f"c{i}") for i in range(4)]
    h, w = MixedOp(candidates, mixing=BinaryGateMixing(paths=paths, seed=1), name="op")(inputs)
    model = SearchModel(keras.Model(inputs, (keras.layers.Dense(2, name="head")(h),
                                             {"op": w})))
    model.compile(optimizer=optimizer(), arch_optimizer="adam")
    op, step = model.mixed_ops[0], tf.function(model.train_step)
    x, y = next(iter(_toy_data()))
    ran = set()
    for _ in range(6):
        before = [[v.numpy().copy() for v in c.trainable_variables] for c in candidates]
        slots_before = [[s.numpy().copy() for v in c.trainable_variables
                         for s in model.optimizer.variables
                         if _slot_of(s, v)]
                        for c in candidates]
        step((x, y, tf.constant(0)))
        executed = int(op.mixing_state["executed"].numpy())
        ran.add(executed)
        for j, c in enumerate(candidates):
            moved = [not np.array_equal(b, v.numpy())
                     for b, v in zip(before[j], c.trainable_variables)]
            slots = [s.numpy() for v in c.trainable_variables for s in model.optimizer.variables
                     if _slot_of(s, v)]
            assert slots, "the optimizer keeps slots for every candidate"
            if j == executed:
                assert all(moved)
            else:
                assert not any(moved), f"candidate {j} moved although {executed} ran"
                for b, a in zip(slots_before[j], slots):
                    np.testing.assert_array_equal(b, a)
    assert len(ran) > 1  # several candidates were sampled over the steps


# -- latency-aware losses -------------------------------------------------------------------

@pytest.mark.parametrize("penalty", [
    {"type": "add#linear", "reference": 5.0, "lam": 0.5},
    {"type": "mul#log", "reference": 5.0, "alpha": 1.0, "beta": 0.6},
])
def test_latency_term_moves_alpha_toward_faster_candidates(penalty):
    # Identical candidates: the cross-entropy cannot prefer one; only latency can.
    cost = LatencyCost(1.0, {"op": [9.0, 2.0, 5.0]})
    model = SearchModel(_toy_supernet("binary", identical=True), cost=cost, penalty=penalty)
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  arch_optimizer=keras.optimizers.Adam(0.05, beta_1=0.0))
    model.fit(_toy_data(), arch_data=_toy_data(1), epochs=2, verbose=0)
    p = model.probabilities()["op"]
    assert int(np.argmax(p)) == 1 and p[1] > 0.5, p
    assert model.expected_cost() < 1.0 + (9 + 2 + 5) / 3 - 2


@pytest.mark.parametrize("name", ["mul_log", "add_linear"])
def test_latency_gradient_reaches_alpha_with_cross_entropy_held(name):
    penalty = penalties.get({"type": name, "reference": 4.0})
    logits = keras.Variable([0.0, 0.0, 0.0])
    cost = Cost(1.0, {"op": [9.0, 2.0, 5.0]})
    with tf.GradientTape() as tape:
        loss = penalty(tf.stop_gradient(tf.constant(2.0)), cost({"op": ops.softmax(logits)}))
    grad = tape.gradient(loss, logits).numpy()
    assert grad[0] > 0 > grad[1]  # descending raises the fast candidate, lowers the slow one


def test_mul_log_needs_a_reference_above_one():
    with pytest.raises(ValueError, match="reference above 1"):
        penalties.get({"type": "mul_log", "reference": 0.5})


def test_latency_table_missing_a_signature_is_a_clear_error():
    space = get_space("resnet50", {**SMALL, "scope": "s"})
    fixed, blocks = space.latency_ops()
    entries = {s: {"count": 1, "mean": 1.0, "var": 0.0} for s, _ in fixed}
    entries.update({s: {"count": 1, "mean": 2.0, "var": 0.0}
                    for s, _ in blocks["layer4_0"][:5]})  # no k5_mish at layer4_0
    table = {"format": "tfnas.latency_table", "version": 1, "overhead": 0.1,
             "entries": entries}
    with pytest.raises(LatencyTableError) as err:
        LatencyCost.from_table(table, space)
    assert "kernel:5-act:mish" in str(err.value) and "latency-table" in str(err.value)


def test_latency_table_counts_repeated_fixed_blocks():
    space = get_space("resnet50", {**SMALL, "scope": "s"})
    fixed, blocks = space.latency_ops()
    assert len(fixed) == 2 + 13  # stem, head and the 13 bottlenecks outside the scope
    entries = {s: {"count": 1, "mean": 1.5, "var": 0.0} for s, _ in fixed}
    entries.update({s: {"count": 1, "mean": 3.5, "var": 0.0}
                    for c in blocks.values() for s, _ in c})
    cost = LatencyCost.from_table({"format": "tfnas.latency_table", "version": 1,
                                   "overhead": 0.5, "entries": entries}, space)
    assert cost.fixed == pytest.approx(0.5 + 15 * 1.0)
    assert cost.tables["layer4_1"] == [3.0] * 6
    table = {"format": "tfnas.latency_table", "version": 1, "overhead": 0.5, "entries": entries}
    in_us = LatencyCost.from_table(table, space, unit="us")
    assert in_us.fixed == pytest.approx(1000 * cost.fixed) and in_us.unit == "us"
    with pytest.raises(LatencyTableError, match="unit"):
        LatencyCost.from_table(table, space, unit="s")


# -- convergence stop and trajectories ------------------------------------------------------

def test_convergence_stop_fires_and_keeps_that_epochs_architecture(tmp_path):
    model = SearchModel(_toy_supernet(BinaryGateMixing(seed=1, name="mixing")))
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  arch_optimizer=keras.optimizers.Adam(0.1, beta_1=0.0))
    stop = ConvergenceStop(patience=2, entropy_threshold=0.3)
    logger = ArchitectureLogger(str(tmp_path), plot_blocks=["op"], tensorboard=False)
    history = model.fit(_toy_data(), arch_data=_toy_data(1), epochs=40, verbose=0,
                        callbacks=[logger, stop])
    assert stop.stopped_epoch is not None and stop.stopped_epoch < 40
    assert len(history.history["loss"]) == stop.stopped_epoch
    assert stop.choices == {"op": 0}
    assert history.history["arch_entropy"][-1] < 0.3
    assert history.history["arch_stable_epochs"][-1] >= 2
    for name in ("architecture.png", "architecture_blocks.png", "architecture_final.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_logger_rejects_unknown_plot_blocks(tmp_path):
    model = SearchModel(_toy_supernet("binary"))
    model.compile(optimizer="sgd", arch_optimizer="adam")
    with pytest.raises(ValueError, match="plot_blocks"):
        model.fit(_toy_data(n=64), arch_data=_toy_data(1, n=64), epochs=1, verbose=0,
                  callbacks=[ArchitectureLogger(str(tmp_path), plot_blocks=["layer9_9"])])


def test_recipes_follow_the_seed():
    import os  # pylint: disable=import-outside-toplevel

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for scope in "smlf":
        with open(os.path.join(root, "configs", f"presnet50_cifar10_{scope}.json"),
                  encoding="utf-8") as f:
            recipe = json.load(f)
        s = recipe["search"]
        assert recipe["space"]["config"]["scope"] == scope and s["mixing"] == "binary"
        assert s["optimizer"] == {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9,
                                  "nesterov": True, "weight_decay": 4e-5, "schedule": "cosine"}
        assert s["arch_optimizer"] == {"name": "adam", "learning_rate": 0.001, "beta_1": 0.0,
                                       "beta_2": 0.999}
        assert recipe["data"]["batch_size"] == 64 and recipe["train"]["inherit"] is False
