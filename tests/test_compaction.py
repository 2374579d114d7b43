import keras
import numpy as np
import pytest

from tfnas.compaction import ChannelGraphError, channel_groups, resize, zero_channels
from tfnas.macs import count_macs
from tfnas.spaces import get_space
from tfnas.spaces.cifar_resnet import cifar_resnet

L = keras.layers


def _randomize_batch_norms(model, seed=0):
    """Moving statistics and scales away from their initial values, so that a
    batch normalization of a dropped channel would show in the output."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, var.shape)])


def _images(n=3, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _hand_macs(depth, widths, classes, size=32):
    """Convolutions' H_out * W_out * k * k * C_in * C_out plus the classifier's C * classes."""
    n = (depth - 2) // 6
    macs = size * size * 9 * 3 * widths[0]
    c_in = widths[0]
    for s, width in enumerate(widths):
        if s:
            size //= 2
            macs += size * size * c_in * width  # the 1x1 projection shortcut
        for b in range(n):
            macs += size * size * 9 * (c_in if b == 0 else width) * width + \
                size * size * 9 * width * width
        c_in = width
    return macs + widths[-1] * classes


def test_resnet32_and_resnet50_counts_next_to_the_seeds():
    r32 = cifar_resnet(32)
    # Seed 002: 487,754 parameters and 144.369 MFLOPs. Ours: 466,906 trainable (461,232 in
    # 3x3 and stem convs, 2,560 in the two projections, 2,464 in BN scales and offsets, 650 in
    # the classifier), 469,370 with BN's moving statistics and the input normalization.
    assert _trainable(r32) == 466_906 and r32.count_params() == 469_370
    assert count_macs(r32) == _hand_macs(32, (16, 32, 64), 10) == 69_124_736
    assert 2 * count_macs(r32) / 1e6 == pytest.approx(138.249, abs=1e-3)  # FLOPs = 2 x MACs
    # CIFAR-100 ResNet-50 (n = 8): the seed's 769,476 parameters, 223.946 MFLOPs.
    r50 = cifar_resnet(50, num_classes=100)
    assert _trainable(r50) == 764_404 and r50.count_params() == 768_212
    assert count_macs(r50) == _hand_macs(50, (16, 32, 64), 100) == 111_597_824


def test_torchvision_resnet50_counts_and_channel_groups():
    # torchvision's resnet50(): 25,557,032 parameters, 4,089,184,256 MACs at 224x224.
    space = get_space("resnet50_widths", {"num_classes": 1000, "input_shape": [224, 224, 3]})
    model = space.build_baseline()
    assert _trainable(model) == 25_557_032 and count_macs(model) == 4_089_184_256
    # The stem, four residual streams (each opened by a projection), two inner widths per
    # bottleneck: 1 + 4 + 2 x 16.
    widths = space.baseline_widths()
    assert len(widths) == 37 and widths["layer4_0_3_conv"] == 2048
    assert widths["stem_conv"] == 64 and widths["layer3_5_2_conv"] == 256


def test_channel_groups_of_a_residual_network():
    groups = channel_groups(cifar_resnet(8))  # n = 1: one block per stage
    assert [(g.name, g.width, g.fixed) for g in groups] == [
        ("stem_conv", 16, False), ("stage1_block1_conv1", 16, False),
        ("stage2_block1_conv1", 32, False), ("stage2_block1_shortcut_conv", 32, False),
        ("stage3_block1_conv1", 64, False), ("stage3_block1_shortcut_conv", 64, False),
        ("classifier", 10, True)]
    stream = groups[0]
    assert stream.producers == ["stem_conv", "stage1_block1_conv2"]
    assert stream.channels[5] == {"stem_conv": 5, "stage1_block1_conv2": 5}
    assert groups[3].producers == ["stage2_block1_shortcut_conv", "stage2_block1_conv2"]
    r32 = get_space("cifar_resnet", {"depth": 32})
    assert len(r32.blocks()) == 3 + 15  # three residual streams, one inner width per block


def _concat_depthwise_model():
    x = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 3, padding="same", name="a")(x)
    d = L.DepthwiseConv2D(3, padding="same", name="dw")(a)
    d = L.BatchNormalization(name="dw_bn")(d)
    b = L.Conv2D(4, 1, name="b")(x)
    s = L.ReLU(name="relu")(L.Add(name="add")([d, b]))
    c = L.Conv2D(3, 1, name="c")(x)
    cat = L.Concatenate(name="cat")([s, c])
    cat = L.BatchNormalization(name="cat_bn")(cat)
    e = L.Conv2D(5, 3, name="e")(cat)
    out = L.Dense(2, name="out")(L.GlobalAveragePooling2D(name="pool")(e))
    return keras.Model(x, out)


def test_depthwise_convs_additions_and_concatenations_tie_channels():
    model = _concat_depthwise_model()
    groups = {g.name: g for g in channel_groups(model)}
    # The depthwise conv carries a's channels into the addition with b's.
    assert groups["a"].producers == ["a", "b"] and groups["a"].width == 4
    assert groups["c"].width == 3 and groups["e"].width == 5 and groups["out"].fixed


@pytest.mark.parametrize("build", [lambda: cifar_resnet(8), _concat_depthwise_model])
def test_surgery_is_exact_when_nothing_is_dropped_and_matches_the_masked_network(build):
    keras.utils.set_random_seed(0)
    model = build()
    _randomize_batch_norms(model)
    x = _images(size=model.input.shape[1])
    np.testing.assert_array_equal(resize(model, {})(x), model(x))
    groups = [g for g in channel_groups(model) if not g.fixed]
    keep = {g.name: list(range(0, g.width, 2)) for g in groups}
    small = resize(model, keep)
    for g in groups:
        assert small.get_layer(g.producers[0]).output.shape[-1] == len(keep[g.name])
    assert small.count_params() < model.count_params()
    before = np.asarray(model(x))
    zero_channels(model, {g.name: [i for i in range(g.width) if i % 2] for g in groups})
    masked = np.asarray(model(x))
    assert np.abs(masked - before).max() > 1e-3  # the dropped channels mattered
    np.testing.assert_allclose(small(x), masked, rtol=1e-5, atol=1e-5)
    loaded = keras.models.model_from_json(small.to_json())  # plain built-in layers
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in small.layers]
    # Growing (MorphNet's expansion past a width): new channels are read with zero weights,
    # so the grown network computes what the cut one does; the seed fixes their weights.
    grow = {g.name: 3 for g in groups}
    grown = resize(model, keep, grow, seed=1)
    for g in groups:
        assert grown.get_layer(g.producers[0]).output.shape[-1] == len(keep[g.name]) + 3
    np.testing.assert_allclose(grown(x), masked, rtol=1e-5, atol=1e-5)
    again = resize(model, keep, grow, seed=1)
    for a, b in zip(grown.weights, again.weights):
        np.testing.assert_array_equal(a, b)
    producer = grown.get_layer(groups[0].producers[0])
    assert np.abs(np.asarray(producer.kernel)[..., -3:]).min() > 0  # initialized, not zero
    with pytest.raises(ChannelGraphError, match=r"Cannot grow channel groups \['nope'\]"):
        resize(model, keep, {"nope": 1})


def test_width_space_builds_the_baseline_at_chosen_widths():
    space = get_space("cifar_resnet", {"depth": 8})
    widths = {b: 3 for b in space.blocks()}
    widths["stage3_block1_shortcut_conv"] = 100  # up to 2x the baseline's 64
    model = space.build_model(widths)
    assert model.get_layer("stage3_block1_conv2").filters == 100
    assert model.get_layer("classifier").kernel.shape == (100, 10)
    with pytest.raises(ValueError, match=r"width 129 is not an integer in 1 \.\.\. 128"):
        space.build_model({**widths, "stage3_block1_shortcut_conv": 129})


def test_bad_inputs_name_the_layer_or_the_group():
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, name="conv")(x)
    odd = keras.Model(x, L.Dense(2)(L.Reshape((-1,), name="flat")(h)))
    with pytest.raises(ChannelGraphError, match="layer 'flat' is a Reshape, which the graph "
                                                "walk does not follow"):
        channel_groups(odd)
    grouped = keras.Model(x, L.Conv2D(6, 3, groups=3, name="g")(x))
    with pytest.raises(ChannelGraphError, match="Conv2D 'g' has groups=3"):
        channel_groups(grouped)
    model = cifar_resnet(8)
    with pytest.raises(ChannelGraphError, match="'stem_conv' would keep none of its 16"):
        resize(model, {"stem_conv": []})
    with pytest.raises(ChannelGraphError, match="reaches the model's input or output"):
        resize(model, {"classifier": [0, 1]})
    with pytest.raises(ChannelGraphError, match=r"Unknown channel groups \['stem'\]"):
        resize(model, {"stem": [0]})
    with pytest.raises(ValueError, match="6n \\+ 2 layers"):
        cifar_resnet(33)


def test_group_lasso_value_and_gradient_against_a_hand_computation():
    import tensorflow as tf

    from tfnas.compaction.group_lasso import GroupLasso

    x = keras.Input((4, 4, 1))
    a = L.Conv2D(2, 3, padding="same", use_bias=False, name="a")(x)
    b = L.Conv2D(2, 1, use_bias=False, name="b")(x)
    c = L.Conv2D(3, 1, use_bias=False, name="c")(L.Add()([a, b]))
    model = keras.Model(x, L.Dense(2)(L.GlobalAveragePooling2D()(c)))
    rng = np.random.default_rng(0)
    for name in "abc":
        layer = model.get_layer(name)
        layer.kernel.assign(rng.normal(size=layer.kernel.shape).astype("float32"))
    wa, wb, wc = (np.asarray(model.get_layer(n).kernel) for n in "abc")
    # Tied channels: (a_j, b_j) with 9 + 1 weights, and c's three filters with 2 weights.
    groups = [np.concatenate([wa[..., j].ravel(), wb[..., j].ravel()]) for j in range(2)] + \
        [wc[..., j].ravel() for j in range(3)]
    expected = sum(np.sqrt(g.size) * np.linalg.norm(g) for g in groups)
    regularizer = GroupLasso(model)
    with tf.GradientTape() as tape:
        value = regularizer()
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)
    grads = tape.gradient(value, [model.get_layer(n).kernel for n in "abc"])
    norm = [np.linalg.norm(g) for g in groups]
    hand_a = np.stack([np.sqrt(10) * wa[..., j] / norm[j] for j in range(2)], -1)
    hand_c = np.stack([np.sqrt(2) * wc[..., j] / norm[2 + j] for j in range(3)], -1)
    np.testing.assert_allclose(grads[0], hand_a, rtol=1e-4)
    np.testing.assert_allclose(grads[2], hand_c, rtol=1e-4)
    # A channel's score: its norm over its group's mean norm.
    scores = regularizer.scores()
    np.testing.assert_allclose(scores["a"], norm[:2] / np.mean(norm[:2]), rtol=1e-5)
    np.testing.assert_allclose(scores["c"], norm[2:] / np.mean(norm[2:]), rtol=1e-5)


@pytest.mark.parametrize("fraction", [0.25, 1 / 3, 0.5])
def test_the_final_cut_lands_within_two_percent_under_the_target(fraction):
    from tfnas.compaction import channel_graph
    from tfnas.compaction.target import fit_to_target

    model = cifar_resnet(32)
    graph = channel_graph(model)
    groups = [g for g in graph.groups() if not g.fixed]
    rng = np.random.default_rng(1)
    scores = {g.name: rng.uniform(size=g.width).tolist() for g in groups}
    target = fraction * count_macs(model)
    keep, macs = fit_to_target(graph, groups, scores, target, tolerance=0.02)
    assert 0.98 * target <= macs <= target
    assert count_macs(resize(model, keep)) == macs  # the counter is the built network's
    with pytest.raises(ChannelGraphError, match="below the smallest network"):
        fit_to_target(graph, groups, scores, 1000)
    with pytest.raises(ChannelGraphError, match="not below the baseline"):
        fit_to_target(graph, groups, scores, 2 * count_macs(model))


def test_morphnet_regularizer_value_and_gradient_against_a_hand_computation():
    import tensorflow as tf

    from tfnas.compaction.morphnet import MorphNetFlops, alive_widths, expanded_channels
    from tfnas.compaction.target import WidthCost, uniform_expansion

    x = keras.Input((4, 4, 3))
    h = L.Conv2D(3, 3, padding="same", use_bias=False, name="a")(x)
    h = L.ReLU()(L.BatchNormalization(name="a_bn")(h))
    h = L.Conv2D(2, 1, use_bias=False, name="b")(h)
    h = L.BatchNormalization(name="b_bn")(h)
    model = keras.Model(x, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(h)))
    gamma_a, gamma_b = np.array([0.5, -0.2, 5e-4]), np.array([1.0, -3.0])
    model.get_layer("a_bn").gamma.assign(gamma_a)
    model.get_layer("b_bn").gamma.assign(gamma_b)
    regularizer = MorphNetFlops(model, threshold=1e-3)
    with tf.GradientTape() as tape:
        value = regularizer()
    # coeff = 2 H W k k: a 2*16*9 = 288 (3 image channels in, 2 of 3 outputs alive),
    # b 2*16 = 32, out 2 (2 classes out, alive and without gamma).
    sa, sb = np.abs(gamma_a).sum(), np.abs(gamma_b).sum()
    expected = 288 * (3 * sa + 2 * 0) + 32 * (2 * sb + 2 * sa) + 2 * (2 * 0 + 2 * sb)
    np.testing.assert_allclose(float(value), expected, rtol=1e-6)
    grads = tape.gradient(value, [model.get_layer("a_bn").gamma, model.get_layer("b_bn").gamma])
    np.testing.assert_allclose(grads[0], np.sign(gamma_a) * (288 * 3 + 32 * 2), rtol=1e-6)
    np.testing.assert_allclose(grads[1], np.sign(gamma_b) * (32 * 2 + 2 * 2), rtol=1e-6)
    assert float(regularizer.alive_flops()) == 288 * 3 * 2 + 32 * 2 * 2 + 2 * 2 * 2
    # Shrink: a has 2 alive channels, b 2. The uniform expansion from (1, 1): channel k of a
    # group with 2 alive comes in at multiplier k / 2, a before b at equal multipliers.
    gammas = regularizer.scores()
    alive = alive_widths(gammas, 1e-3)
    assert alive == {"a": 2, "b": 2}
    cost = WidthCost(regularizer.graph)

    def hand(wa, wb):  # MACs: a 16*9*3*wa, b 16*wa*wb, out wb*2
        return 16 * 9 * 3 * wa + 16 * wa * wb + wb * 2
    assert cost.macs({"a": 3, "b": 7}) == hand(3, 7)  # past the widths too
    widths, macs = uniform_expansion(cost, alive, hand(2, 2), 0.01, {"a": 6, "b": 6})
    assert widths == {"a": 2, "b": 2} and macs == hand(2, 2)
    # A budget between: the multiplier stops at a's 3rd channel (3/2); b's fits, a's 4th not.
    widths, macs = uniform_expansion(cost, alive, hand(3, 3) + 10, 0.001, {"a": 6, "b": 6})
    assert widths == {"a": 3, "b": 3} and macs == hand(3, 3)
    # Growth past the widths (a has 3, b 2), capped by the space's widest.
    widths, _ = uniform_expansion(cost, alive, hand(6, 9), 0.001, {"a": 6, "b": 5})
    assert widths == {"a": 6, "b": 5}
    keep, grow = expanded_channels(gammas, {"a": 4, "b": 1})
    assert keep == {"a": [0, 1, 2], "b": [1]} and grow == {"a": 1, "b": 0}
    with pytest.raises(ChannelGraphError, match="below the smallest network"):
        uniform_expansion(cost, alive, 100, 0.02, {"a": 6, "b": 6})


def test_variational_dropout_kl_value_and_gradient_against_a_hand_computation():
    import tensorflow as tf

    from tfnas.compaction.variational_dropout import (K1, K2, K3, VariationalConv2D,
                                                      VariationalKL)

    x = keras.Input((4, 4, 2))
    conv = VariationalConv2D(3, 1, use_bias=False, name="v", seed=0)
    model = keras.Model(x, L.Dense(2)(L.GlobalAveragePooling2D()(conv(x))))
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(1, 1, 2, 3)).astype("float32")
    log_sigma2 = rng.uniform(-4, 0, size=(1, 1, 2, 3)).astype("float32")
    conv.kernel.assign(kernel)
    conv.log_sigma2.assign(log_sigma2)
    regularizer = VariationalKL(model, examples=10)
    with tf.GradientTape() as tape:
        value = regularizer()
    la = log_sigma2 - np.log(kernel.astype("float64") ** 2 + 1e-8)
    sigmoid = 1 / (1 + np.exp(-(K2 + K3 * la)))
    kl = -(K1 * sigmoid - 0.5 * np.log1p(np.exp(-la)) - K1)
    np.testing.assert_allclose(float(value), kl.sum() / 10, rtol=1e-5)
    grad = tape.gradient(value, conv.log_sigma2)
    hand = -(K1 * K3 * sigmoid * (1 - sigmoid) + 0.5 * np.exp(-la) / (1 + np.exp(-la))) / 10
    np.testing.assert_allclose(grad, hand, rtol=1e-4, atol=1e-7)
    # The mean of the local reparameterization is the plain convolution.
    images = rng.normal(size=(2, 4, 4, 2)).astype("float32")
    np.testing.assert_allclose(conv(images), np.einsum("bhwi,io->bhwo", images, kernel[0, 0]),
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(conv(images, training=True), conv(images))
    # A channel's score: its share of surviving weights over the group's mean share.
    dense = (la <= 3).reshape(-1, 3).mean(0)
    np.testing.assert_allclose(regularizer.scores()["v"], dense / dense.mean(), rtol=1e-6)


def _compaction_config(*overrides):
    import os

    from tfnas.config import load_config

    recipe = os.path.join(os.path.dirname(__file__), "..", "configs",
                          "compact_resnet32_group_lasso.json")
    return load_config(recipe, overrides=[
        "space.config.depth=8", "search.baseline_epochs=1", "search.group_lasso.epochs=1",
        "train.epochs=1", "data.limit=64", "data.batch_size=32", *overrides])


@pytest.mark.parametrize("algorithm", ["group_lasso", "morphnet", "variational_dropout",
                                       "generative_synthesis"])
def test_compaction_search_hits_the_target_and_training_starts_from_the_cut_network(
        algorithm, tmp_path):
    from tfnas import pipeline
    from tfnas.run_dir import RunDirectory

    config = _compaction_config(f"search.algorithm={algorithm}", f"search.{algorithm}.epochs=1",
                                "search.generative_synthesis.iterations=2")
    prepared = pipeline.prepare(config)
    run = RunDirectory(str(tmp_path / "run"))
    arch, cut = pipeline.search(config, run, verbose=0, prepared=prepared)
    meta = arch.metadata
    assert -0.02 <= meta["target_error"] <= 0
    assert meta["macs"] == count_macs(cut) and meta["baseline_macs"] == count_macs(
        prepared.space.build_baseline())
    assert arch.choices == {g.name: g.width for g in channel_groups(cut) if not g.fixed}
    model = prepared.space.build_model(arch.choices)
    assert prepared.method.inherit(cut, arch, model)
    x = _images()
    np.testing.assert_allclose(model(x), cut(x), rtol=1e-5, atol=1e-5)
    loaded = prepared.method.load(run.path)
    np.testing.assert_allclose(loaded(x), cut(x), rtol=1e-5, atol=1e-5)
    assert not list((tmp_path / "run" / "checkpoints").glob("search_*"))


def test_bad_compaction_input_is_a_clear_error():
    from tfnas import pipeline
    from tfnas.errors import ConfigError

    with pytest.raises(ConfigError, match="search.target: 1.5 is greater than or equal to the "
                                          "maximum of 1; the FLOPs target is a fraction"):
        _compaction_config("search.target=1.5")  # a target larger than the baseline
    with pytest.raises(ConfigError, match="not a space of widths"):
        pipeline.prepare(_compaction_config('space={"name": "grunas", "config": {}}'))
    with pytest.raises(ConfigError, match="search.algorithm: 'lasso' is not one of"):
        _compaction_config("search.algorithm=lasso")


def test_any_saved_functional_model_is_a_baseline(tmp_path):
    from tfnas import pipeline
    from tfnas.run_dir import RunDirectory

    keras.utils.set_random_seed(0)
    baseline = cifar_resnet(8)
    _randomize_batch_norms(baseline)
    path = str(tmp_path / "baseline.keras")
    baseline.save(path)
    config = _compaction_config(f'space={{"name": "keras_model", "config": {{"path": "{path}"}}}}',
                                f"search.baseline_weights={path}", "search.baseline_epochs=0",
                                "search.group_lasso.epochs=0")
    prepared = pipeline.prepare(config)
    assert prepared.space.blocks() == get_space("cifar_resnet", {"depth": 8}).blocks()
    arch, cut = pipeline.search(config, RunDirectory(str(tmp_path / "run")), verbose=0,
                                prepared=prepared)
    assert -0.02 <= arch.metadata["target_error"] <= 0
    # No training: the cut network is the file's network with channels cut out.
    graph_groups = {g.name: g for g in channel_groups(baseline)}
    kept = {name: width for name, width in arch.choices.items()
            if width < graph_groups[name].width}
    assert kept  # something was cut
    full = resize(baseline, {})
    np.testing.assert_array_equal(full.get_layer("classifier").bias,
                                  cut.get_layer("classifier").bias)
    with pytest.raises(ValueError, match="has input_shape \\[32, 32, 3\\], the run asks for "
                                         "\\[64, 64, 3\\]"):
        get_space("keras_model", {"path": path, "input_shape": [64, 64, 3]})
    with pytest.raises(ValueError, match="is not a file"):
        pipeline.prepare(_compaction_config(
            'space={"name": "keras_model", "config": {"path": "/nonexistent.keras"}}'))
