"""What a search space is, and the registry of spaces by name."""

import difflib
import math

from tfnas.errors import ConfigError, TfnasError
from tfnas.registry import Registry


class SearchSpaceError(TfnasError, ValueError):
    """A search space, or a choice in it, is not valid."""


class UnknownSpaceError(SearchSpaceError, ConfigError):
    """A config names a search space that is not registered."""


SPACES = Registry("search space", error=UnknownSpaceError)


def register_space(cls):
    """Class decorator: makes a `SearchSpace` subclass available by its `name`."""
    return SPACES.register(cls.name)(cls)


def get_space(name, config=None):
    """Instantiates the space registered as `name` with `config` (a dict)."""
    cls = SPACES.resolve(name)
    if not isinstance(config or {}, dict):
        raise SearchSpaceError(f"The configuration of space {name!r} must be an object, got "
                               f"{config!r}.")
    try:
        return cls(**(config or {}))
    except SearchSpaceError:
        raise
    except (TypeError, ValueError, KeyError, IndexError) as err:
        # A value of the wrong type that the space's own checks did not foresee.
        raise SearchSpaceError(f"Invalid configuration of space {name!r}: "
                               f"{type(err).__name__}: {err}.") from None


# The largest integer a space configuration may hold (channels, cells, image sides), and
# the most parameters a network tfnas builds may have: sizes beyond them are typos that
# would make Keras allocate tensors no machine holds.
MAX_SIZE = 65_536
MAX_PARAMETERS = 10 ** 9
# A space config whose integers are all at most this builds networks far below
# MAX_PARAMETERS: only larger ones are counted before a build.
USUAL_SIZE = 1024


def _check_sizes(name, value, path):
    """Refuses non-finite numbers and integers over `MAX_SIZE` in a space config; returns
    its largest integer."""
    if isinstance(value, dict):
        return max((_check_sizes(name, item, f"{path}.{key}" if path else str(key))
                    for key, item in value.items()), default=0)
    if isinstance(value, (list, tuple)):
        return max((_check_sizes(name, item, f"{path}[{i}]") for i, item in enumerate(value)),
                   default=0)
    if isinstance(value, float) and not math.isfinite(value):
        raise SearchSpaceError(f"Space {name!r}: {path} is {value}; give a finite number.")
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > MAX_SIZE:
            raise SearchSpaceError(
                f"Space {name!r}: {path} = {value:,} is larger than any size tfnas builds (at "
                f"most {MAX_SIZE:,}); check the space's configuration.")
        return value
    return 0


def estimate_parameters(space, choices):
    """The parameter count (weights of every kind) of `space.build_model(choices)`, read
    from the shapes of its weights without allocating them.

    Example:

    >>> space = get_space("nasbench201", {"filters": 60_000})
    >>> estimate_parameters(space, {b: "nor_conv_3x3" for b in space.blocks()}) > 10 ** 12
    True
    """
    import keras  # pylint: disable=import-outside-toplevel
    # Keras keeps the variables created in a stateless scope in a global list, to
    # initialize them when a scope exits; these must never be.
    from keras.src.backend.common import global_state  # pylint: disable=import-outside-toplevel

    pending = list(global_state.get_global_attribute("uninitialized_variables", []) or [])
    try:
        with keras.StatelessScope(initialize_variables=False):
            model = space.build_model(choices)
            return int(sum(math.prod(w.shape) for w in model.weights))
    finally:
        global_state.set_global_attribute("uninitialized_variables", pending)


def check_parameters(space, choices, what):
    """Raises `SearchSpaceError` if `space.build_model(choices)` would have more than
    `MAX_PARAMETERS` parameters, before anything is allocated. Counted only where the
    space's config has sizes over `USUAL_SIZE` (0.1 to 1.5 s a count): what the usual
    sizes build is far from the limit."""
    if space.largest_size <= USUAL_SIZE:
        return None
    count = estimate_parameters(space, choices)
    if count > MAX_PARAMETERS:
        raise SearchSpaceError(
            f"{what} would have {count:,} parameters, more than the {MAX_PARAMETERS:,} any "
            f"network tfnas builds may have; check the sizes in its space configuration "
            f"({space.name!r}).")
    return count


def available_spaces():
    return SPACES.names()


def _did_you_mean(word, options):
    close = difflib.get_close_matches(str(word), list(options), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


class SearchSpace:
    """A family of networks with one categorical choice per block.

    Subclasses set `name` and `defaults` (the configuration keys and their
    default values) and implement `blocks`, `candidates`, `build_supernet`,
    `build_model`, `inherit_weights` and `latency_ops`. Every hook a search
    method, a cost or the deployment calls is declared here; `derive`,
    `block_of_layer` and `hyperparameters` have defaults that suit a space of
    independent categorical blocks.
    """

    name = None
    defaults = {}
    # Whether `build_model(layer_set=...)` can take the tf_keras layer set of the tfmot
    # quantization backend (`tfnas.deploy.qat`). Native QAT (`tfnas.deploy.quantize`)
    # rewrites the built Keras 3 model and needs nothing from the space.
    tfmot_layer_set = False
    # Whether costs are counted on derived models (`tfnas.costs.tables_from_models`) rather
    # than on the supernet: when the supernet's candidates are not the derived network's
    # layers (BatchNorm without scale and offset in search, ops shared between cells).
    costs_on_derived_models = False

    def __init__(self, **config):
        unknown = sorted(set(config) - set(self.defaults))
        if unknown:
            hints = "".join(_did_you_mean(k, self.defaults) for k in unknown)
            raise SearchSpaceError(
                f"Unknown configuration keys {unknown} for search space {self.name!r}; "
                f"valid keys are {sorted(self.defaults)}.{hints}")
        self.largest_size = _check_sizes(self.name, config, "")
        self.config = {**self.defaults, **config}

    def blocks(self):
        """Names of the searchable blocks, in order."""
        raise NotImplementedError

    def candidates(self, block):
        """The choices allowed at `block` (JSON values)."""
        raise NotImplementedError

    def validate_choices(self, choices):
        """Checks a `{block: choice}` mapping against the space; raises `SearchSpaceError`."""
        blocks = self.blocks()
        if not isinstance(choices, dict):
            raise SearchSpaceError(f"choices must map block names to choices, got "
                                   f"{type(choices).__name__}.")
        if len(choices) != len(blocks) or set(choices) != set(blocks):
            missing = [b for b in blocks if b not in choices]
            extra = [b for b in choices if b not in blocks]
            raise SearchSpaceError(
                f"Search space {self.name!r} has {len(blocks)} blocks {blocks}, the "
                f"architecture gives {len(choices)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {extra}" if extra else "")
                + ". Derive the architecture from a supernet of the same space configuration.")
        for block in blocks:
            self.validate_choice(block, choices[block])

    def validate_choice(self, block, choice):
        allowed = self.candidates(block)
        if choice not in allowed:
            raise SearchSpaceError(f"Block {block!r}: choice {choice!r} is not a candidate; "
                                   f"allowed: {allowed}.")

    def build_supernet(self, mixing="gumbel"):
        """A functional model `x -> (logits, {block: mixing weights})` whose blocks are
        `MixedOp`s sharing the rule `mixing` (a `MixingRule` or its config)."""
        raise NotImplementedError

    def build_model(self, choices, name=None, layer_set=None, fold_batch_norms=False):
        """A plain Keras model for one `{block: choice}` architecture.

        `layer_set` swaps the classes the model is made of (a namespace with
        `Conv2D`, `Dense`, ..., `Input`, `Model`): quantization-aware versions
        of the layers, or another Keras. `fold_batch_norms=True` builds the
        inference form whose convolutions carry the BatchNorm that follows them.
        """
        raise NotImplementedError

    def training_model(self, choices, drop_path=0.0, auxiliary_weight=0.0):
        """`(model, auxiliary)` to train architecture `choices` with regularizers that only
        training uses: `model` is `build_model`'s network, with drop-path layers
        (`tfnas.layers.cell_ops.DropPath`, identity at inference) where `drop_path > 0`;
        `auxiliary` is None or the logits of an auxiliary head on an inner tensor of
        `model`, weighted `auxiliary_weight` in the training loss. The default builds
        neither and refuses to be asked for them."""
        if drop_path or auxiliary_weight:
            raise SearchSpaceError(f"Search space {self.name!r} has no drop-path or auxiliary "
                                   "head; set train.drop_path and train.auxiliary_weight to "
                                   "0.")
        return self.build_model(choices), None

    def derive(self, probabilities, cost=None, limits=None):
        """`{block: choice}` from `{block: probabilities over candidates(block)}`.

        The most probable alternative of every derivation group
        (`derivation_groups`): by default the most probable candidate of every
        block. With a `tfnas.costs.Cost` and `limits=(low, high)`, the most
        probable architecture whose cost (of its `effective_choices`) lies within
        them, or, if none does, the one nearest under `high` (`tfnas.budget`).
        """
        groups = self.derivation_groups(probabilities)
        if limits is None:
            chosen = [max(range(len(g)), key=lambda a, g=g: g[a][0]) for g in groups]
        else:
            from tfnas import budget  # pylint: disable=import-outside-toplevel

            scored = [[(score, cost.of_blocks(self.effective_choices(part)))
                       for score, part in g] for g in groups]
            chosen, _ = budget.most_probable_within(scored, limits, fixed=cost.fixed)
        choices = {}
        for g, a in zip(groups, chosen):
            choices.update(g[a][1])
        return choices

    def cost_range(self, cost):
        """`(cheapest, dearest)`: the costs of the cheapest and the dearest architectures
        `derive` can give (a DARTS node keeps two edges, so its cheapest is not every edge
        none)."""
        groups = self.cost_groups(cost)
        return (cost.fixed + sum(min(g) for g in groups),
                cost.fixed + sum(max(g) for g in groups))

    def cost_groups(self, cost):
        """The costs of every derivation group's alternatives (`derivation_groups`), without
        the fixed part: a derived architecture costs `cost.fixed` plus one of each."""
        uniform = {b: [1.0] * len(self.candidates(b)) for b in self.blocks()}
        return [[cost.of_blocks(self.effective_choices(part)) for _, part in group]
                for group in self.derivation_groups(uniform)]

    def derivation_groups(self, probabilities):
        """The independent parts of a derivation: a list of groups, each a list of
        `(log-probability, {block: choice})` alternatives, one of which is taken. Default:
        one group per block. A space whose rule ties blocks together (DARTS keeps two edges
        per node) or whose network's cost is not a sum over blocks groups them."""
        return [[(log_probability(p), {block: c}) for c, p in zip(self.candidates(block),
                                                        probabilities[block])]
                for block in self.blocks()]

    def effective_choices(self, choices):
        """The choices (of one derivation group, or all) as the built network realizes them:
        what a cost counts. Default: as given. A space whose networks leave out ops that
        reach no output sets those to the choice that costs nothing."""
        return dict(choices)

    def block_of_layer(self, name):
        """The block a layer of a derived model belongs to (None: the fixed part); default:
        the block its name starts with (`<block>_...`)."""
        return next((b for b in self.blocks() if name.startswith(f"{b}_")), None)

    def supernet_path(self, choices):
        """`{mixed op name: choice}` that runs architecture `choices` on the supernet
        (`tfnas.layers.set_path`); default: one op per block, named after it. A space whose
        supernet repeats a block's choice in several ops (one cell for every layer)
        overrides it."""
        self.validate_choices(choices)
        return dict(choices)

    def hyperparameters(self, hp):
        """`{block: choice}` drawn from a keras-tuner `HyperParameters`, one `hp.Choice`
        per block named after it. Candidates that are not all numbers or all strings
        are chosen by their position."""
        choices = {}
        for block in self.blocks():
            candidates = self.candidates(block)
            kinds = {type(c) for c in candidates}
            if len(kinds) == 1 and kinds <= {int, float, str} and \
                    len(set(candidates)) == len(candidates):
                choices[block] = hp.Choice(block, candidates)
            else:
                choices[block] = candidates[hp.Choice(block, list(range(len(candidates))))]
        return choices

    def inherit_weights(self, model, supernet, choices):
        """Copies the supernet's weights of the chosen candidates into `model`."""
        raise NotImplementedError

    def latency_ops(self):
        """The ops a latency table must time, by signature.

        Returns `(fixed, blocks)`: `fixed` lists the ops every network has as
        `(signature, builder)` pairs (a signature may repeat: each occurrence
        counts), where `builder()` makes a standalone Keras model of the op;
        `blocks` maps each block to one `(signature, builder)` per candidate,
        in candidate order.
        """
        raise NotImplementedError


def log_probability(p):
    """`log p`, finite for p = 0 (probabilities are stored rounded)."""
    return math.log(max(float(p), 1e-30))
