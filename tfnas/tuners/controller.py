"""ENAS's controller: an LSTM policy over a sequence of discrete decisions."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops


class Controller:
    """The policy of ENAS (Pham et al., 2018), as released: a one-layer LSTM whose input at
    each step is the embedding of the previous decision (a learned start vector at the
    first), one softmax head per decision, logits `c · tanh(l / T)`, every weight drawn from
    U(-0.1, 0.1).

    Decisions are named and added as the search space shows them (`add`); a decision may be
    skipped in a sample (a conditional hyperparameter that is inactive): the sequence is then
    shorter, never misaligned, because each decision keeps its own head and embedding.

    Sampling (`begin`, `step`, `embed`) runs in NumPy on a copy of the weights: one decision
    costs microseconds, where an eager Keras LSTM step costs milliseconds. Learning
    (`log_probs_and_entropies`, `minimize`) runs a batch of paths at once, the skipped
    decisions masked.

    Example:

    >>> c = Controller(units=8, seed=0)
    >>> c.add("op", 3)
    >>> x, state = c.begin()
    >>> p, state = c.step(x, state, "op", tanh_constant=0.44)
    >>> p.shape
    (3,)
    >>> log_p, entropy = c.log_probs_and_entropies([[("op", 2)]], {"op": 0.44})
    """

    def __init__(self, units=64, seed=None):
        self.units = int(units)
        self.seed = seed
        self.sizes = {}
        init = keras.initializers.RandomUniform(-0.1, 0.1, seed=seed)
        self.cell = keras.layers.LSTMCell(self.units, kernel_initializer=init,
                                          recurrent_initializer=init, bias_initializer=init,
                                          unit_forget_bias=False, name="controller_lstm")
        self.cell.build((1, self.units))
        self.start = keras.Variable(init((1, self.units)), name="start")
        self.heads, self.embeddings = {}, {}
        self._changed()

    def add(self, name, size):
        """Adds a decision with `size` choices (no-op if it exists with that size)."""
        if name in self.sizes:
            if self.sizes[name] != size:
                raise ValueError(f"Decision {name!r} has {self.sizes[name]} choices, "
                                 f"not {size}.")
            return
        # One seed per decision, from its position: a rebuilt controller has the same weights.
        init = keras.initializers.RandomUniform(
            -0.1, 0.1, seed=None if self.seed is None else self.seed + 1 + len(self.sizes))
        self.sizes[name] = int(size)
        self.heads[name] = keras.Variable(init((self.units, size)), name=f"{name}_head")
        self.embeddings[name] = keras.Variable(init((size, self.units)), name=f"{name}_embed")
        self._changed()

    @property
    def variables(self):
        """Every trainable variable, in a fixed order (the LSTM, the start, then per decision
        in the order they were added)."""
        per_decision = [v for name in self.sizes for v in (self.heads[name],
                                                            self.embeddings[name])]
        return [*self.cell.trainable_variables, self.start, *per_decision]

    def _changed(self):
        self._numpy = None
        self._encoded = None

    # -- sampling, in NumPy -------------------------------------------------------------------
    def _weights(self):
        if self._numpy is None:
            def value(variable):
                return _numpy(variable).astype(np.float64)

            self._numpy = {
                "kernel": value(self.cell.kernel),
                "recurrent": value(self.cell.recurrent_kernel),
                "bias": value(self.cell.bias), "start": value(self.start),
                "heads": {n: value(v) for n, v in self.heads.items()},
                "embeddings": {n: value(v) for n, v in self.embeddings.items()}}
        return self._numpy

    def begin(self):
        """The input and state before the first decision."""
        zeros = np.zeros((1, self.units))
        return self._weights()["start"], [zeros, zeros]

    def step(self, x, state, name, tanh_constant=None, temperature=None):
        """The probabilities of decision `name` and the LSTM state after it."""
        w = self._weights()
        h, c = state
        z = x @ w["kernel"] + h @ w["recurrent"] + w["bias"]
        i, f, g, o = np.split(z, 4, axis=1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        logits = (h @ w["heads"][name])[0]
        if temperature:
            logits = logits / temperature
        if tanh_constant:
            logits = tanh_constant * np.tanh(logits)
        p = np.exp(logits - logits.max())
        return p / p.sum(), [h, c]

    def embed(self, name, index):
        """The next step's input after choosing `index` for `name`."""
        return self._weights()["embeddings"][name][index][None]

    # -- learning, a batch at once -------------------------------------------------------------
    def _batch(self, paths):
        """Paths `[[(name, index), ...], ...]` as index and mask matrices over the decisions
        in the order they were added (the order of the search space)."""
        column = {name: d for d, name in enumerate(self.sizes)}
        index = np.zeros((len(paths), len(column)), np.int32)
        mask = np.zeros((len(paths), len(column)), np.float32)
        for b, path in enumerate(paths):
            last = -1
            for name, choice in path:
                if column[name] <= last:
                    raise ValueError(f"Controller: decision {name!r} comes out of the order "
                                     f"the decisions were added in ({list(self.sizes)}).")
                last = column[name]
                index[b, last], mask[b, last] = choice, 1.0
        return index, mask

    def _forward(self, index, mask, tanh_constants, temperature):
        # Eager, batched over the paths: a REINFORCE step every few trials costs a fraction
        # of a second, less than tracing it would (1 to 2 s an oracle).
        batch = ops.shape(index)[0]
        kernel, recurrent, bias = (self.cell.kernel, self.cell.recurrent_kernel,
                                   self.cell.bias)
        x = ops.tile(self.start, [batch, 1])
        h = c = ops.zeros((batch, self.units))
        log_prob = entropy = ops.zeros((batch,))
        for d, name in enumerate(self.sizes):
            if not mask[:, d].any():  # inactive in every path: the state passes unchanged
                continue
            present = mask[:, d]
            keep = present[:, None]
            z = ops.matmul(x, kernel) + ops.matmul(h, recurrent) + bias
            i, f, g, o = ops.split(z, 4, axis=1)
            c_next = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
            h_next = ops.sigmoid(o) * ops.tanh(c_next)
            logits = ops.matmul(h_next, self.heads[name])
            if temperature:
                logits = logits / temperature
            if tanh_constants.get(name):
                logits = tanh_constants[name] * ops.tanh(logits)
            chosen = ops.one_hot(index[:, d], self.sizes[name])
            log_p = ops.sum(ops.log_softmax(logits) * chosen, axis=1)
            log_prob = log_prob + log_p * present
            entropy = entropy + ops.stop_gradient(-log_p * ops.exp(log_p)) * present
            h = keep * h_next + (1.0 - keep) * h
            c = keep * c_next + (1.0 - keep) * c
            x = keep * ops.matmul(chosen, self.embeddings[name]) + (1.0 - keep) * x
        return log_prob, entropy

    def log_probs_and_entropies(self, paths, tanh_constants, temperature=None):
        """Each path's `log p(path)` and ENAS's entropy estimate of it, `Σ −log p(a)·p(a)`
        over its decisions (as the released code adds to the reward), as NumPy arrays."""
        log_probs, entropies = self._forward(*self._batch(paths), tanh_constants or {},
                                             temperature)
        return _numpy(log_probs), _numpy(entropies)

    def minimize(self, optimizer, paths, weights, tanh_constants, temperature=None):
        """One `optimizer` step on `−mean(weights · log p(path))` (REINFORCE with
        `weights` the advantages; maximum likelihood with positive weights). `optimizer`
        must be built on `variables`."""
        index, mask = self._batch(paths)
        variables = self.variables
        with tf.GradientTape() as tape:
            log_probs, _ = self._forward(index, mask, tanh_constants or {}, temperature)
            loss = -ops.mean(log_probs * np.asarray(weights, np.float32))
        # The last decision's embedding feeds nothing: a zero gradient, not None.
        gradients = [ops.zeros_like(v) if g is None else g
                     for g, v in zip(tape.gradient(loss, variables), variables)]
        optimizer.apply_gradients(zip(gradients, variables))
        self._changed()
        return float(loss)

    # -- state --------------------------------------------------------------------------------
    def get_weights(self):
        """The weights as JSON-ready strings (`encode`), exact."""
        if self._encoded is None:  # the oracle's state is written after every trial
            self._encoded = [encode(v) for v in self.variables]
        return self._encoded

    def set_weights(self, weights):
        if len(weights) != len(self.variables):
            raise ValueError(f"Controller state has {len(weights)} weights; this controller "
                             f"has {len(self.variables)}.")
        for variable, value in zip(self.variables, weights):
            value = decode(value)
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(f"Controller weight {variable.name} has shape "
                                 f"{tuple(variable.shape)}; the state holds {value.shape}.")
            variable.assign(value)
        self._changed()


def _numpy(x):
    # `.numpy()`, not `np.array`: TensorFlow's `__array__` lacks NumPy 2's `copy` argument
    # and warns on every call (thousands per search).
    return tf.convert_to_tensor(x).numpy()


def _sigmoid(x):
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # no overflow warning for large |x|


def encode(variable):
    """A variable's value as `{"dtype", "shape", "base64"}`: exact and quick to write as JSON
    (keras-tuner writes the oracle's state after every trial)."""
    import base64  # pylint: disable=import-outside-toplevel

    value = np.array(_numpy(variable), order="C")  # keeps 0-d arrays 0-d
    return {"dtype": str(value.dtype), "shape": list(value.shape),
            "base64": base64.b64encode(value.tobytes()).decode("ascii")}


def decode(record):
    """The array `encode` wrote."""
    import base64  # pylint: disable=import-outside-toplevel

    return np.frombuffer(base64.b64decode(record["base64"]), dtype=record["dtype"]).reshape(
        record["shape"]).copy()
