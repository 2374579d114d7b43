"""Zero-cost proxies against values computed by hand (numpy, float64) on tiny networks."""

import math

import keras
import numpy as np
import pytest

from tfnas import proxies

RNG = np.random.default_rng(0)
X = RNG.normal(size=(6, 2, 2, 1))
Y = np.array([0, 1, 2, 0, 1, 2])
W1 = np.array([0.75, -0.5]).reshape(1, 1, 1, 2)  # a 1x1 convolution: one unit open per pixel
W2 = RNG.normal(size=(8, 3)).astype("float32").astype("float64")  # dense, on 2x2x2


def _network(fused=False):
    """conv 1x1 (no bias) -> ReLU -> flatten -> dense (no bias), with W1 and W2."""
    inputs = keras.Input((2, 2, 1))
    x = keras.layers.Conv2D(2, 1, use_bias=False, activation="relu" if fused else None)(inputs)
    if not fused:
        x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, use_bias=False)(x))
    model.set_weights([W1, W2])
    return model


def _forward(w1, w2, x=X):
    h = x * w1[0, 0, 0]  # [N, 2, 2, 2]: the 1x1 convolution of one input channel
    f = np.maximum(h, 0).reshape(len(x), -1)
    return h, f, f @ w2


def _gradients(w1, w2):
    """Cross-entropy (mean over the batch) and its gradients, by hand."""
    h, f, logits = _forward(w1, w2)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dlogits = (p - np.eye(3)[Y]) / len(X)
    dw2 = f.T @ dlogits
    dh = (dlogits @ w2.T).reshape(h.shape) * (h > 0)
    dw1 = (X * dh).sum((0, 1, 2)).reshape(w1.shape)
    return dw1, dw2, dh, dlogits, logits, h


def _score(model, name, images=X, labels=Y):
    return proxies.score(model, images.astype("float32"), labels, proxies=(name,))[name]


def test_gradient_proxies_match_the_hand_computed_values():
    dw1, dw2, dh, dlogits, logits, h = _gradients(W1, W2)
    model = _network()
    assert _score(model, "grad_norm") == pytest.approx(
        np.linalg.norm(dw1) + np.linalg.norm(dw2), rel=1e-4)
    assert _score(model, "snip") == pytest.approx(
        np.abs(W1 * dw1).sum() + np.abs(W2 * dw2).sum(), rel=1e-4)
    # fisher: per output channel, 0.5 * mean over images of (sum over positions a * dL/da)^2,
    # once per kernel element feeding the channel (1 for the conv, 8 for the dense layer).
    conv = 0.5 * ((h * dh).sum((1, 2)) ** 2).mean(0)
    dense = 0.5 * ((logits * dlogits) ** 2).mean(0) * 8
    assert _score(model, "fisher") == pytest.approx(conv.sum() + dense.sum(), rel=1e-4)
    # grasp: -W * Hg, Hg by central differences of the hand-written gradient along g.
    eps = 1e-5
    plus = _gradients(W1 + eps * dw1, W2 + eps * dw2)
    minus = _gradients(W1 - eps * dw1, W2 - eps * dw2)
    hg1, hg2 = ((plus[i] - minus[i]) / (2 * eps) for i in (0, 1))
    assert _score(model, "grasp") == pytest.approx(
        -(W1 * hg1).sum() - (W2 * hg2).sum(), rel=1e-3)


def test_jacob_cov_synflow_and_naswot_match_the_hand_computed_values():
    model = _network()
    h, _, _ = _forward(W1, W2)
    # jacob_cov: d(sum of logits)/dx per image, through the ReLU's open units.
    df = np.tile(W2.sum(1), (len(X), 1)).reshape(h.shape) * (h > 0)
    jacobian = (df * W1[0, 0, 0]).sum(-1).reshape(len(X), -1)
    lam = np.linalg.eigvalsh(np.corrcoef(jacobian))
    expected = -np.sum(np.log(np.maximum(lam, 0) + 1e-5) + 1 / (np.maximum(lam, 0) + 1e-5))
    assert _score(model, "jacob_cov") == pytest.approx(expected, rel=1e-4)
    # synflow: |W|, input ones: R = sum(|f| @ |W2|), f = |w1| at each position; each
    # layer's sum of W * dR/dW is R (a positive linear chain): 2 R.
    ones = np.ones((1, 2, 2, 1))
    _, f, logits = _forward(np.abs(W1), np.abs(W2), ones)
    assert _score(model, "synflow") == pytest.approx(2 * logits.sum(), rel=1e-12)
    # naswot: binary codes of the ReLU's inputs; K counts agreeing units; log|K|.
    codes = (h.reshape(len(X), -1) > 0).astype("float64")
    kernel = codes @ codes.T + (1 - codes) @ (1 - codes).T
    assert _score(model, "naswot") == pytest.approx(np.linalg.slogdet(kernel)[1], rel=1e-6)
    # The same network with the ReLU fused into the convolution: the same codes.
    assert _score(_network(fused=True), "naswot") == pytest.approx(
        np.linalg.slogdet(kernel)[1], rel=1e-6)
    assert _score(model, "params") == 2 + 24 and _score(model, "flops") == 4 * 2 + 8 * 3


def test_synflow_runs_in_float64_where_float32_overflows():
    # A positive chain of 12 dense layers of 64 units, every weight 100: R = 64 * 100^12 *
    # 64^11 = 8e39 (float32 ends at 3.4e38), and synflow = 12 R.
    inputs = keras.Input((1,))
    x = inputs
    for _ in range(12):
        x = keras.layers.Dense(64, use_bias=False, kernel_initializer=keras.initializers
                               .Constant(100.0))(x)
    model = keras.Model(inputs, x)
    r = 64 * 100.0 ** 12 * 64.0 ** 11
    assert r > float(np.finfo("float32").max)
    assert not np.all(np.isfinite(model(np.ones((1, 1), "float32")).numpy()))
    value = proxies.score(model, np.ones((2, 1), "float32"), proxies=("synflow",))["synflow"]
    assert value == pytest.approx(12 * r, rel=1e-12)
    assert model.layers[1].kernel.dtype == "float32"  # the model itself is untouched


def test_synflow_bypasses_batch_norm_and_scoring_leaves_the_model_as_it_was():
    inputs = keras.Input((2, 2, 1))
    x = keras.layers.Conv2D(2, 1, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(keras.layers.Flatten()(x))
    with_bn = keras.Model(inputs, keras.layers.Dense(3, use_bias=False)(x))
    bn = with_bn.layers[2]
    bn.set_weights([np.array([3.0, -2.0]), np.array([0.5, 1.0]), np.array([1.0, -1.0]),
                    np.array([4.0, 0.25])])
    with_bn.layers[1].set_weights([W1])
    with_bn.layers[-1].set_weights([W2])
    before = [v.numpy().copy() for v in with_bn.variables]
    scores = proxies.score(with_bn, X.astype("float32"), Y, proxies=proxies.PROXIES)
    assert _score(with_bn, "synflow") == pytest.approx(_score(_network(), "synflow"),
                                                       rel=1e-12)
    assert all(np.isfinite(v) for v in scores.values()), scores
    for variable, value in zip(with_bn.variables, before):  # training-mode BN moved nothing
        np.testing.assert_array_equal(variable.numpy(), value)


def test_synflow_feeds_its_ones_past_the_input_normalization():
    inputs = keras.Input((2, 2, 1))
    x = keras.layers.Normalization(mean=[120.0], variance=[3600.0])(inputs)
    x = keras.layers.Conv2D(2, 1, use_bias=False)(x)
    x = keras.layers.Flatten()(keras.layers.ReLU()(x))
    normalized = keras.Model(inputs, keras.layers.Dense(3, use_bias=False)(x))
    normalized.set_weights([W1, W2])
    assert _score(normalized, "synflow") == pytest.approx(_score(_network(), "synflow"),
                                                          rel=1e-12)


def test_degenerate_networks_get_a_defined_score():
    inputs = keras.Input((2, 2, 1))
    linear = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    assert _score(linear, "naswot") == -math.inf  # no ReLU: K = 0
    zero = keras.Model(inputs, keras.layers.Dense(3, kernel_initializer="zeros")(
        keras.layers.Flatten()(inputs)))
    assert _score(zero, "jacob_cov") == -math.inf  # outputs do not depend on the pixels
    # A NAS-Bench-201 cell of "none" edges cuts every path from the input: no gradient.
    from tfnas.spaces import get_space  # pylint: disable=import-outside-toplevel

    space = get_space("nasbench201", {"filters": 4, "cells_per_stage": 1,
                                      "input_shape": [8, 8, 3]})
    cut = space.build_model(dict.fromkeys(space.blocks(), "none"))
    images = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    assert _score(cut, "jacob_cov", images, np.arange(4)) == -math.inf


def test_bad_input_is_a_one_line_error():
    model = _network()
    images = X.astype("float32")
    with pytest.raises(ValueError, match="batch of two images or more"):
        proxies.score(model, images[:1], Y[:1], proxies=("jacob_cov",))
    with pytest.raises(ValueError, match=r"\['snip'\] need `labels`"):
        proxies.score(model, images, proxies=("snip",))
    with pytest.raises(ValueError, match="Unknown proxies \\['synflw'\\]"):
        proxies.score(model, images, Y, proxies=("synflw",))
    with pytest.raises(ValueError, match=r"shape \[N, 2, 2, 1\]; got \[6, 3, 3, 1\]"):
        proxies.score(model, np.zeros((6, 3, 3, 1)), Y)
    with pytest.raises(ValueError, match="6 images but 5 labels"):
        proxies.score(model, images, Y[:5], proxies=("snip",))
    inputs = keras.Input((2, 2, 1))
    pooling = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    with pytest.raises(ValueError, match="has no convolution or dense kernels to score"):
        proxies.score(pooling, images, Y, proxies=("synflow",))
    nan = _network()
    nan.layers[1].kernel.assign(np.full((1, 1, 1, 2), np.nan, "float32"))
    with pytest.raises(ArithmeticError, match="The proxy 'snip' of model .* is NaN"):
        proxies.score(nan, images, Y, proxies=("snip",))


def test_vote_ranks_each_proxy_and_averages():
    rows = [{"a": 1.0, "b": 3.0}, {"a": 2.0, "b": 1.0}, {"a": 3.0, "b": 2.0}]
    assert proxies.vote(rows) == [0.5, 0.25, 0.75]
    assert proxies.vote(rows, ["b"]) == [1.0, 0.0, 0.5]
    assert proxies.vote([{"a": 1.0}, {"a": 1.0}]) == [0.5, 0.5]  # ties share the rank
    with pytest.raises(ValueError, match="missing \\['c'\\]"):
        proxies.vote(rows, ["a", "c"])


@pytest.mark.parametrize("name, config", [
    ("grunas", {"widths": [[12, 24], [24, 24]], "candidates": [1, 2, 4]}),
    ("nasbench201", {"filters": 4, "cells_per_stage": 1}),
])
def test_every_proxy_scores_the_networks_of_the_spaces(name, config):
    # Grouped convolutions split by hand, channel shuffles, cell ops with pools and skips.
    from tfnas.spaces import get_space

    space = get_space(name, config)
    rng = np.random.default_rng(1)
    choices = {b: space.candidates(b)[rng.integers(len(space.candidates(b)))]
               for b in space.blocks()}
    model = space.build_model(choices)
    images = rng.uniform(0, 255, (8, *model.inputs[0].shape[1:])).astype("float32")
    scores = proxies.score(model, images, rng.integers(0, 10, 8), proxies=proxies.PROXIES)
    assert set(scores) == set(proxies.PROXIES)
    assert all(np.isfinite(v) for v in scores.values()), scores
    # The input of ones enters past the model's normalization: not all negative, not 0.
    assert scores["synflow"] > 0
