"""ENAS's controller: an LSTM policy over a sequence of discrete decisions."""

import keras
import numpy as np
from keras import ops


class Controller:
    """The policy of ENAS (Pham et al., 2018), as released: a one-layer LSTM whose input at
    each step is the embedding of the previous decision (a learned start vector at the
    first), one softmax head per decision, logits `c · tanh(l / T)`, every weight drawn from
    U(-0.1, 0.1).

    Decisions are named and added as the search space shows them (`add`); a decision may be
    skipped in a sample (a conditional hyperparameter that is inactive): the sequence is then
    shorter, never misaligned, because each decision keeps its own head and embedding.

    Example:

    >>> c = Controller(units=8, seed=0)
    >>> c.add("op", 3)
    >>> x, state = c.begin()
    >>> p, state = c.step(x, state, "op", tanh_constant=0.44)
    >>> p.shape
    (3,)
    >>> log_p, _ = c.log_prob_and_entropy([("op", 2)], {"op": 0.44})
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

    @property
    def variables(self):
        """Every trainable variable, in a fixed order (the LSTM, the start, then per decision
        in the order they were added)."""
        per_decision = [v for name in self.sizes for v in (self.heads[name],
                                                            self.embeddings[name])]
        return [*self.cell.trainable_variables, self.start, *per_decision]

    def _logits(self, x, state, name, tanh_constant, temperature):
        h, state = self.cell(x, state)
        logits = ops.matmul(h, self.heads[name])
        if temperature:
            logits = logits / temperature
        if tanh_constant:
            logits = tanh_constant * ops.tanh(logits)
        return logits, state

    def begin(self):
        """The input and state before the first decision."""
        zeros = ops.zeros((1, self.units))
        return self.start, [zeros, zeros]

    def step(self, x, state, name, tanh_constant=None, temperature=None):
        """The probabilities of decision `name` (numpy) and the LSTM state after it."""
        logits, state = self._logits(x, state, name, tanh_constant, temperature)
        return ops.convert_to_numpy(ops.softmax(logits[0])).astype(np.float64), state

    def embed(self, name, index):
        """The next step's input after choosing `index` for `name`."""
        return self.embeddings[name][index][None]

    def log_prob_and_entropy(self, decisions, tanh_constants, temperature=None):
        """`log p(decisions)` (differentiable) and ENAS's entropy estimate of the sample,
        `Σ −log p(a)·p(a)` over its decisions (as the released code adds to the reward)."""
        x, state = self.begin()
        log_prob, entropy = 0.0, 0.0
        for name, index in decisions:
            logits, state = self._logits(x, state, name, tanh_constants.get(name), temperature)
            log_p = ops.log_softmax(logits[0])[index]
            log_prob = log_prob + log_p
            entropy = entropy + ops.stop_gradient(-log_p * ops.exp(log_p))
            x = self.embeddings[name][index][None]
        return log_prob, entropy

    def get_weights(self):
        """The weights as JSON-ready strings (`encode`), exact."""
        return [encode(v) for v in self.variables]

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


def encode(variable):
    """A variable's value as `{"dtype", "shape", "base64"}`: exact and quick to write as JSON
    (keras-tuner writes the oracle's state after every trial)."""
    import base64  # pylint: disable=import-outside-toplevel

    value = np.array(ops.convert_to_numpy(variable), order="C")  # keeps 0-d arrays 0-d
    return {"dtype": str(value.dtype), "shape": list(value.shape),
            "base64": base64.b64encode(value.tobytes()).decode("ascii")}


def decode(record):
    """The array `encode` wrote."""
    import base64  # pylint: disable=import-outside-toplevel

    return np.frombuffer(base64.b64decode(record["base64"]), dtype=record["dtype"]).reshape(
        record["shape"]).copy()
