"""Zero-cost proxies: how good an untrained network is likely to be, from one batch.

`score(model, images, labels)` scores a Keras model at initialization, as the reference
code does (SamsungLabs/zero-cost-nas `foresight`, BayesWatch/nas-without-training): in
training mode (batch norm on the batch's statistics), over the kernels of the
convolution and dense layers only (no biases, no batch-norm weights), each layer's
score summed over its elements and the layers' scores summed.

- `grad_norm`: Σ ‖∂L/∂W‖₂ (L: cross-entropy of the batch).
- `snip`: Σ |W ⊙ ∂L/∂W|.
- `grasp`: Σ −W ⊙ Hg, with g = ∂L/∂W and H the Hessian of L.
- `fisher`: per output channel of each convolution or dense layer, with a its output
  (before any fused activation), ½·mean over the batch of (Σ over positions a·∂L/∂a)²,
  counted once per kernel element feeding that channel.
- `jacob_cov`: J = ∂(Σ outputs)/∂x per image, λ the eigenvalues of corrcoef(J):
  −Σ [log(λ + 1e-5) + 1/(λ + 1e-5)]. Needs two images or more.
- `synflow`: on a float64 copy with every weight made absolute and batch norm bypassed,
  input all ones [1, H, W, C] (past the model's own input normalization, which is made
  the identity too), R = Σ outputs: Σ |W ⊙ ∂R/∂W| (float64, since the sums reach 1e61,
  beyond float32).
- `naswot`: for each ReLU, the binary code (pre-activation > 0) of each image; K[i, j]
  counts the units where images i and j agree; log|K|. No labels. The pre-activation
  is taken where a ReLU is fused into a layer (`Conv2D(activation="relu")`) too. A
  network without ReLUs, or whose codes do not tell the images apart, has a singular K:
  its score is −inf.
- `params`, `flops`: the trainable parameters and multiply-accumulates (baselines).

Larger is better for every proxy. `vote(rows, proxies)` combines several proxies over
many networks by their ranks.

Example:

>>> import numpy as np
>>> inputs = keras.Input((8, 8, 3))
>>> x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
>>> x = keras.layers.GlobalAveragePooling2D()(x)
>>> model = keras.Model(inputs, keras.layers.Dense(10)(x))
>>> images = np.random.default_rng(0).uniform(size=(8, 8, 8, 3)).astype("float32")
>>> scores = score(model, images, np.arange(8), proxies=("synflow", "naswot", "params"))
>>> sorted(scores), scores["params"]
(['naswot', 'params', 'synflow'], 162.0)
"""

import contextlib
import functools
import math

import keras
import numpy as np
import tensorflow as tf

from tfnas.costs import count_parameters
from tfnas.layers import GroupedConv2D
from tfnas.macs import count_macs

PROXIES = ("grad_norm", "snip", "grasp", "fisher", "jacob_cov", "synflow", "naswot",
           "params", "flops")
_NEEDS_LABELS = ("grad_norm", "snip", "grasp", "fisher")


def score(model, images, labels=None, proxies=("synflow", "naswot"), from_logits=True):
    """The `proxies` of the untrained `model` on one batch: `{name: float}`.

    `images` is a batch [N, H, W, C] (N ≥ 2) as the model takes it; `labels` (class
    indices) are needed by `grad_norm`, `snip`, `grasp` and `fisher`. The model's
    weights, batch-norm statistics included, are as before when this returns.
    """
    unknown = [p for p in proxies if p not in PROXIES]
    if unknown:
        raise ValueError(f"Unknown proxies {unknown}; the proxies are {list(PROXIES)}.")
    images = _check_images(model, images)
    if labels is None and any(p in _NEEDS_LABELS for p in proxies):
        raise ValueError(f"The proxies {[p for p in proxies if p in _NEEDS_LABELS]} need "
                         "`labels` (the class index of each image).")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels.")
    kernels = _kernel_layers(model)
    if not kernels and any(p not in ("naswot", "params", "flops") for p in proxies):
        raise ValueError(f"Model {model.name!r} has no convolution or dense kernels to score.")
    results = {}
    with weights_kept(model):
        for name in proxies:
            value = float(_COMPUTE[name](model, kernels, images, labels, from_logits))
            if math.isnan(value):
                raise ArithmeticError(f"The proxy {name!r} of model {model.name!r} is NaN "
                                      "(a weight or activation is not finite).")
            results[name] = value
    return results


def vote(rows, proxies=None):
    """The mean rank (0 worst ... 1 best) of each of several networks over `proxies`.

    `rows` are the `score` results of the networks; `proxies` (default: every proxy
    the rows share) are combined with equal weight; ties share their rank.

    >>> vote([{"a": 1.0, "b": 3.0}, {"a": 2.0, "b": 1.0}, {"a": 3.0, "b": 2.0}])
    [0.5, 0.25, 0.75]
    """
    if not rows:
        return []
    proxies = list(proxies or [p for p in rows[0] if all(p in r for r in rows)])
    missing = sorted({p for p in proxies for r in rows if p not in r})
    if missing or not proxies:
        raise ValueError(f"Every row needs the voting proxies; missing {missing or proxies}.")
    if len(rows) == 1:
        return [1.0]
    ranks = np.zeros(len(rows))
    for proxy in proxies:
        values = np.array([r[proxy] for r in rows], "float64")
        order = np.argsort(np.argsort(values, kind="stable"), kind="stable").astype("float64")
        for value in np.unique(values):  # ties: the mean of their ranks
            order[values == value] = order[values == value].mean()
        ranks += order / (len(rows) - 1)
    return [float(r) for r in ranks / len(proxies)]


def _check_images(model, images):
    images = np.asarray(images, "float32")
    expected = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    if images.ndim < 2 or (expected and tuple(images.shape[1:]) != expected):
        raise ValueError(f"`images` must be a batch of the model's inputs, shape "
                         f"[N, {', '.join(map(str, expected or ['...']))}]; got "
                         f"{list(images.shape)}.")
    if len(images) < 2:
        raise ValueError("The proxies score a batch of two images or more (jacob_cov and "
                         "naswot compare images); got one.")
    return images


def _kernel_layers(model):
    """(layer, its kernels) of every convolution and dense layer, nested ones included."""
    found = []
    for layer in model._flatten_layers(include_self=False):  # pylint: disable=protected-access
        if isinstance(layer, GroupedConv2D):
            found.append((layer, list(layer.kernels)))
        elif isinstance(layer, keras.layers.SeparableConv2D):
            found.append((layer, [layer.depthwise_kernel, layer.pointwise_kernel]))
        elif isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                                keras.layers.DepthwiseConv2D, keras.layers.Dense)):
            found.append((layer, [layer.kernel]))
    return found


@contextlib.contextmanager
def weights_kept(model):
    """Puts every weight back as it was (training-mode calls move batch-norm statistics)."""
    saved = [v.numpy() for v in model.variables]
    try:
        yield
    finally:
        for variable, value in zip(model.variables, saved):
            variable.assign(value)


def _is_relu(fn):
    return fn is keras.activations.relu or getattr(fn, "__name__", "") == "relu"


def _is_relu_layer(layer):
    return isinstance(layer, keras.layers.ReLU) or (
        isinstance(layer, keras.layers.Activation) and _is_relu(layer.activation))


@contextlib.contextmanager
def _recorded(layers):
    """Records, in call order, `(layer, tensor)` for each call of `layers`: the input of a
    ReLU layer, the output before any fused activation of any other layer. Yields the list
    they are appended to."""
    records = []

    def wrap(layer):
        original = layer.call
        if _is_relu_layer(layer):
            @functools.wraps(original)
            def call(inputs, *args, **kwargs):
                records.append((layer, inputs))
                return original(inputs, *args, **kwargs)
            return call

        @functools.wraps(original)
        def call(*args, **kwargs):
            activation = getattr(layer, "activation", None)
            if activation is None:
                pre = original(*args, **kwargs)
            else:
                layer.activation = keras.activations.linear
                try:
                    pre = original(*args, **kwargs)
                finally:
                    layer.activation = activation
            records.append((layer, pre))
            return pre if activation is None else activation(pre)
        return call

    try:
        for layer in layers:
            layer.__dict__["call"] = wrap(layer)
        yield records
    finally:
        for layer in layers:
            layer.__dict__.pop("call", None)


def _cross_entropy(model, images, labels, from_logits):
    outputs = model(images, training=True)
    return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
        labels, outputs, from_logits=from_logits))


def _gradients(model, kernels, images, labels, from_logits):
    weights = [k for _, ks in kernels for k in ks]
    with tf.GradientTape() as tape:
        loss = _cross_entropy(model, images, labels, from_logits)
    return weights, tape.gradient(loss, weights)


def _grad_norm(model, kernels, images, labels, from_logits):
    _, grads = _gradients(model, kernels, images, labels, from_logits)
    return sum(float(tf.norm(g)) for g in grads if g is not None)


def _snip(model, kernels, images, labels, from_logits):
    weights, grads = _gradients(model, kernels, images, labels, from_logits)
    return sum(float(tf.reduce_sum(tf.abs(w * g))) for w, g in zip(weights, grads)
               if g is not None)


def _grasp(model, kernels, images, labels, from_logits):
    weights = [k for _, ks in kernels for k in ks]
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = _cross_entropy(model, images, labels, from_logits)
        grads = inner.gradient(loss, weights)
        # Hg: the gradient of g · stop_gradient(g).
        z = tf.add_n([tf.reduce_sum(g * tf.stop_gradient(g)) for g in grads if g is not None])
    hessian_grads = outer.gradient(z, weights)
    return sum(float(tf.reduce_sum(-w * hg)) for w, hg in zip(weights, hessian_grads)
               if hg is not None)


def _fan_in(layer, kernels):
    """Kernel elements feeding each output channel of `layer`."""
    if isinstance(layer, GroupedConv2D):
        return np.concatenate([np.full(k.shape[-1], np.prod(k.shape[:-1])) for k in kernels])
    channels = layer.output.shape[-1] if hasattr(layer, "output") else None
    total = sum(int(np.prod(k.shape)) for k in kernels)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        channels = kernels[0].shape[-2] * kernels[0].shape[-1]
    elif isinstance(layer, keras.layers.SeparableConv2D):
        channels = kernels[1].shape[-1]
    elif channels is None:
        channels = kernels[0].shape[-1]
    return np.full(channels, total / channels)


def _fisher(model, kernels, images, labels, from_logits):
    fan_in = {id(layer): _fan_in(layer, ks) for layer, ks in kernels}
    with _recorded([layer for layer, _ in kernels]) as records:
        with tf.GradientTape() as tape:
            loss = _cross_entropy(model, images, labels, from_logits)
    total = 0.0
    for (layer, a), g in zip(records, tape.gradient(loss, [a for _, a in records])):
        if g is None:
            continue
        axes = list(range(1, len(a.shape) - 1))
        per_channel = tf.reduce_sum(a * g, axis=axes) if axes else a * g
        fisher = 0.5 * tf.reduce_mean(tf.square(per_channel), axis=0)
        total += float(np.sum(fisher.numpy().astype("float64") * fan_in[id(layer)]))
    return total


def _jacob_cov(model, kernels, images, labels, from_logits):
    x = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(model(x, training=True))
    gradient = tape.gradient(total, x)
    if gradient is None:  # no path from the input to the output (a cell of "none" edges)
        return -math.inf
    jacobian = gradient.numpy().reshape(len(images), -1).astype("float64")
    if np.any(np.std(jacobian, axis=1) == 0):
        return -math.inf  # an image's outputs do not depend on its pixels: no correlation
    eigenvalues = np.linalg.eigvalsh(np.corrcoef(jacobian))
    k = 1e-5
    return -float(np.sum(np.log(np.maximum(eigenvalues, 0) + k) +
                         1.0 / (np.maximum(eigenvalues, 0) + k)))


def _synflow(model, kernels, images, labels, from_logits):
    copy = _absolute_float64_copy(model)
    copy_kernels = [k for _, ks in _kernel_layers(copy) for k in ks]
    ones = tf.ones((1, *images.shape[1:]), "float64")
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(copy(ones, training=False))
    grads = tape.gradient(total, copy_kernels)
    return math.fsum(float(tf.reduce_sum(tf.abs(w * g))) for w, g in zip(copy_kernels, grads)
                     if g is not None)


def _float64(config):
    if isinstance(config, dict):
        return {k: ("float64" if k == "dtype" and _is_float_dtype(v) else _float64(v))
                for k, v in config.items()}
    if isinstance(config, list):
        return [_float64(v) for v in config]
    return config


def _without_input_scaling(config):
    """`config` with every `Normalization` and `Rescaling` made the identity: synflow's input
    of ones enters the network proper, as in the reference code, whose data normalization
    lies outside the network (tfnas's models normalize [0, 255] images inside)."""
    if isinstance(config, list):
        return [_without_input_scaling(v) for v in config]
    if not isinstance(config, dict):
        return config
    config = {k: _without_input_scaling(v) for k, v in config.items()}
    inner = config.get("config")
    if config.get("class_name") == "Normalization" and isinstance(inner, dict):
        for key, value in (("mean", 0.0), ("variance", 1.0)):
            if inner.get(key) is not None:
                inner[key] = (np.full(np.shape(inner[key]), value).tolist()
                              if np.ndim(inner[key]) else value)
    if config.get("class_name") == "Rescaling" and isinstance(inner, dict):
        inner.update(scale=1.0, offset=0.0)
    return config


def _is_float_dtype(value):
    if isinstance(value, dict):
        value = value.get("config", {}).get("name", "")
    return isinstance(value, str) and ("float" in value or value.startswith("mixed"))


def _absolute_float64_copy(model):
    """`model` rebuilt in float64, its trainable weights absolute, its batch norms and
    input normalization the identity (synflow's linearized network)."""
    config = _without_input_scaling(_float64(keras.saving.serialize_keras_object(model)))
    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        copy = keras.saving.deserialize_keras_object(config)
    except Exception as err:  # pylint: disable=broad-except
        raise ValueError(f"synflow rebuilds the model in float64 from its config, and model "
                         f"{model.name!r} could not be rebuilt: {err}") from err
    finally:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)
    if len(copy.variables) != len(model.variables):
        raise ValueError(f"synflow: model {model.name!r} rebuilt from its config has other "
                         "weights than the model; it needs a model that serializes whole.")
    trainable = {id(v) for v in model.trainable_variables}
    for source, target in zip(model.variables, copy.variables):
        value = source.numpy().astype("float64")
        target.assign(np.abs(value) if id(source) in trainable else value)
    for layer in copy._flatten_layers(include_self=False):  # pylint: disable=protected-access
        if isinstance(layer, keras.layers.Normalization):  # adapted: statistics as weights
            for variable in layer.non_trainable_variables:
                if variable.path.rsplit("/", 1)[-1] in ("mean", "variance"):
                    one = variable.path.endswith("variance")
                    variable.assign(np.full(variable.shape, float(one), "float64"))
        if isinstance(layer, keras.layers.BatchNormalization):
            for name, value in (("gamma", 1.0), ("beta", 0.0), ("moving_mean", 0.0),
                                ("moving_variance", 1.0 - layer.epsilon)):
                if getattr(layer, name, None) is not None:
                    variable = getattr(layer, name)
                    variable.assign(np.full(variable.shape, value, "float64"))
    return copy


def _naswot(model, kernels, images, labels, from_logits):
    every = model._flatten_layers(include_self=False)  # pylint: disable=protected-access
    layers = [layer for layer in every
              if _is_relu_layer(layer) or _is_relu(getattr(layer, "activation", None))]
    with _recorded(layers) as records:
        model(images, training=True)
    n = len(images)
    agree = np.zeros((n, n), "float64")
    for _, pre in records:
        codes = tf.cast(tf.reshape(pre, (n, -1)) > 0, "float64")
        agree += (tf.matmul(codes, codes, transpose_b=True) +
                  tf.matmul(1 - codes, 1 - codes, transpose_b=True)).numpy()
    if not records:
        return -math.inf
    sign, logdet = np.linalg.slogdet(agree)
    return float(logdet) if sign > 0 else -math.inf


def _params(model, kernels, images, labels, from_logits):
    return count_parameters(model)


def _flops(model, kernels, images, labels, from_logits):
    return count_macs(model)


_COMPUTE = {"grad_norm": _grad_norm, "snip": _snip, "grasp": _grasp, "fisher": _fisher,
            "jacob_cov": _jacob_cov, "synflow": _synflow, "naswot": _naswot,
            "params": _params, "flops": _flops}
