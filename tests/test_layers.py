import keras
import numpy as np
import pytest
from keras import ops

from tfnas.layers import (ChannelShuffle, GroupedConv2D, GrunasUnit, GumbelSoftmaxMixing,
                          MixedOp, SoftmaxMixing, group_sizes)


def test_group_sizes_floor_split_gives_remainder_to_last_group():
    assert group_sizes(6, 4) == [1, 1, 1, 3]
    assert group_sizes(12, 4) == [3, 3, 3, 3]
    assert group_sizes(7, 1) == [7]
    with pytest.raises(ValueError, match="at least one channel"):
        group_sizes(3, 4)


def _reference_grouped_conv1x1(x, kernels, in_sizes):
    outs, start = [], 0
    for k, n in zip(kernels, in_sizes):
        outs.append(np.einsum("bhwc,cd->bhwd", x[..., start:start + n], k[0, 0]))
        start += n
    return np.concatenate(outs, axis=-1)


def test_grouped_conv_matches_per_group_reference_with_uneven_split():
    layer = GroupedConv2D(12, 1, groups=4)
    x = np.random.rand(2, 5, 5, 6).astype("float32")
    y = ops.convert_to_numpy(layer(x))
    assert layer.input_groups == [1, 1, 1, 3] and layer.output_groups == [3, 3, 3, 3]
    kernels = [ops.convert_to_numpy(k) for k in layer.kernels]
    np.testing.assert_allclose(y, _reference_grouped_conv1x1(x, kernels, [1, 1, 1, 3]),
                               rtol=1e-5, atol=1e-5)
    assert layer.count_params() == 1 * 3 * 3 + 3 * 3


def test_grouped_conv_equals_keras_grouped_conv_when_even():
    x = np.random.rand(2, 6, 6, 8).astype("float32")
    ours = GroupedConv2D(16, 3, groups=4, padding="same", use_bias=True)
    theirs = keras.layers.Conv2D(16, 3, groups=4, padding="same")
    y = ours(x)
    theirs.build(x.shape)
    theirs.set_weights([np.concatenate([ops.convert_to_numpy(k) for k in ours.kernels], -1),
                        ops.convert_to_numpy(ours.bias)])
    np.testing.assert_allclose(ops.convert_to_numpy(y), ops.convert_to_numpy(theirs(x)),
                               rtol=1e-4, atol=1e-4)


def test_grouped_conv_even_split_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="not divisible by groups=4"):
        GroupedConv2D(10, 1, groups=4, split="even")


def test_channel_shuffle_interleaves_groups_and_rejects_bad_groups():
    x = ops.reshape(ops.arange(6, dtype="float32"), (1, 1, 1, 6))
    assert ops.convert_to_numpy(ChannelShuffle(3)(x)).ravel().tolist() == [0, 2, 4, 1, 3, 5]
    assert ops.convert_to_numpy(ChannelShuffle(2)(x)).ravel().tolist() == [0, 3, 1, 4, 2, 5]
    with pytest.raises(ValueError, match="divisible by 4"):
        ChannelShuffle(4)(x)


def test_grunas_unit_layout_and_parameter_count():
    unit = GrunasUnit(12, 24, groups=4)
    y = unit(np.zeros((2, 18, 18, 12), "float32"))
    assert y.shape == (2, 18, 18, 24)
    # 1x1 12->6, BN(6), dw 3x3 on 6, grouped 1x1 6->12 in [1,1,1,3]x[3,3,3,3], BN(12)
    assert sum(int(np.prod(w.shape)) for w in unit.trainable_weights) == \
        72 + 12 + 54 + 18 + 24
    residual = GrunasUnit(24, 24, groups=3)
    assert residual(np.zeros((1, 4, 4, 24), "float32")).shape == (1, 4, 4, 24)
    assert isinstance(residual.merge, keras.layers.Add)


def test_grunas_unit_rejects_group_count_the_shuffle_cannot_use():
    with pytest.raises(ValueError, match="channel shuffle"):
        GrunasUnit(24, 48, groups=5)
    with pytest.raises(ValueError, match="twice"):
        GrunasUnit(24, 36, groups=1)


def test_mixed_op_softmax_is_the_mean_of_candidates_at_init():
    cands = [keras.layers.Dense(3, name=f"d{i}") for i in range(2)]
    op = MixedOp(cands, mixing="softmax")
    x = np.random.rand(4, 5).astype("float32")
    y, w = op(x)
    expected = 0.5 * (cands[0](x) + cands[1](x))
    np.testing.assert_allclose(ops.convert_to_numpy(y), ops.convert_to_numpy(expected),
                               rtol=1e-5, atol=1e-6)
    assert op.architecture_variables == [op.logits]
    assert ops.convert_to_numpy(w).tolist() == [0.5, 0.5]


def test_a_mixed_op_traces_its_weights_once_and_leaves_zero_candidates_out():
    import tensorflow as tf

    from tfnas.layers import CellOp

    candidates = [CellOp(op, 4, affine=False, name=f"c_{op}")
                  for op in ("none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1")]
    op = MixedOp(candidates, mixing="softmax")
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 6, 6, 4)), tf.float32)

    def step(x):
        with tf.GradientTape() as tape:
            y, w = op(x, training=True)
            loss = tf.reduce_sum(y * y)
        return y, w, tape.gradient(loss, op.logits)

    y, w, grad = step(x)
    expected = sum(w[i] * c(x, training=True) for i, c in enumerate(candidates))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)
    graph = tf.function(step).get_concrete_function(x).graph
    types = [o.type for o in graph.get_operations()]
    # The weights unstacked once, no slice per candidate; `none` never called.
    assert types.count("Unpack") == 1 and "StridedSlice" not in types
    assert not any("c_none" in o.name for o in graph.get_operations())


def test_rematerialized_traces_variable_gradients_only_when_asked():
    import tensorflow as tf

    from tfnas.layers.mixing import rematerialized

    dense = keras.layers.Dense(3)
    x = tf.constant(np.random.default_rng(1).normal(size=(4, 5)), tf.float32)
    dense.build(x.shape)
    grads = {}
    for name, f in (("plain", dense), ("remat", rematerialized(dense)),
                    ("inputs only", rematerialized(dense, variable_gradients=lambda: False))):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.sin(f(x)))
        grads[name] = tape.gradient(loss, [x] + dense.trainable_weights)
    for a, b in zip(grads["plain"], grads["remat"]):
        np.testing.assert_allclose(b, a, rtol=1e-6)
    np.testing.assert_allclose(grads["inputs only"][0], grads["plain"][0], rtol=1e-6)
    assert grads["inputs only"][1:] == [None, None]


def test_mixed_op_rejects_candidates_with_different_shapes():
    with pytest.raises(ValueError, match="different output shapes"):
        MixedOp([keras.layers.Dense(3), keras.layers.Dense(4)])(np.zeros((1, 2), "float32"))


def test_gumbel_softmax_samples_in_training_and_is_deterministic_in_inference():
    rule = GumbelSoftmaxMixing(temperature=1.0, seed=1)
    logits = ops.convert_to_tensor([0.0, 1.0, 2.0])
    a = ops.convert_to_numpy(rule(logits, training=True))
    b = ops.convert_to_numpy(rule(logits, training=True))
    assert not np.allclose(a, b)
    np.testing.assert_allclose(a.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(rule(logits, training=False)),
                               ops.convert_to_numpy(ops.softmax(logits)), rtol=1e-6)
    rule.temperature.assign(0.01)
    cold = ops.convert_to_numpy(rule(logits, training=True))
    assert cold.max() > 0.99


def test_gumbel_hard_is_one_hot_forward_with_soft_gradient():
    import tensorflow as tf

    rule = GumbelSoftmaxMixing(temperature=1.0, hard=True, seed=0)
    logits = tf.Variable([0.1, 0.2, 0.3])
    with tf.GradientTape() as tape:
        w = rule(logits, training=True)
        loss = tf.reduce_sum(w * tf.constant([1.0, 2.0, 3.0]))
    assert sorted(w.numpy().tolist()) == [0.0, 0.0, 1.0]
    assert np.abs(tape.gradient(loss, logits).numpy()).sum() > 0


@pytest.mark.parametrize("layer,shape", [
    (GroupedConv2D(12, 1, groups=4, name="g"), (1, 4, 4, 6)),
    (ChannelShuffle(3, name="s"), (1, 4, 4, 6)),
    (GrunasUnit(12, 24, groups=3, name="u"), (1, 4, 4, 12)),
])
def test_layers_round_trip_through_config(layer, shape):
    x = np.random.rand(*shape).astype("float32")
    y = layer(x)
    clone = layer.__class__.from_config(layer.get_config())
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(ops.convert_to_numpy(clone(x)), ops.convert_to_numpy(y),
                               rtol=1e-5, atol=1e-5)


def test_mixed_op_round_trips_through_config():
    op = MixedOp([GrunasUnit(12, 24, g, name=f"u_g{g}") for g in (1, 2)],
                 mixing=SoftmaxMixing(), choices=[1, 2], name="mix")
    x = np.random.rand(1, 4, 4, 12).astype("float32")
    y, _ = op(x)
    clone = MixedOp.from_config(op.get_config())
    clone(x)
    clone.set_weights(op.get_weights())
    assert clone.choices == [1, 2]
    np.testing.assert_allclose(ops.convert_to_numpy(clone(x)[0]), ops.convert_to_numpy(y),
                               rtol=1e-5, atol=1e-5)


def test_mixed_ops_that_share_logits_are_one_architecture_choice():
    from tfnas import SearchModel
    from tfnas.layers.mixed_op import distributions

    x = keras.Input((3,))
    owner = MixedOp([keras.layers.Dense(2), keras.layers.Dense(2)], choices=["a", "b"],
                    name="edge")
    sharer = MixedOp([keras.layers.Dense(2), keras.layers.Dense(2)], choices=["a", "b"],
                     logits_from=owner, name="cell2_edge")
    h, w1 = owner(x)
    y, w2 = sharer(h)
    search = SearchModel(keras.Model(x, (y, {"edge": w1, "cell2_edge": w2})))
    search.compile(optimizer="sgd", arch_optimizer=keras.optimizers.Adam(0.1))
    assert [v.path for v in search.architecture_variables] == [owner.logits.path]
    assert sharer.logits is owner.logits and not sharer.architecture_variables
    assert owner.logits.path not in [v.path for v in search.weight_variables]
    assert list(distributions(search.supernet)) == ["edge"]
    import tensorflow as tf

    arch_batch = (np.ones((4, 3), "float32"), np.array([0, 1, 0, 1]), np.int32(1))
    search.fit(tf.data.Dataset.from_tensors(arch_batch), epochs=1, verbose=0)
    assert not np.allclose(ops.convert_to_numpy(owner.logits), 0.0)  # one update, both ops
    with pytest.raises(ValueError, match="same choices"):
        MixedOp([keras.layers.Dense(2)] * 2, choices=["a", "c"], logits_from=owner)
    with pytest.raises(ValueError, match="build_supernet"):
        MixedOp.from_config(sharer.get_config())
