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
