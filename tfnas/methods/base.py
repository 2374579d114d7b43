"""What a search method is, and the registry of methods by name.

A method is one module: a `SearchMethod` subclass registered with
`@register_method`, whose `defaults` and `schema` are the keys of the run
config's `search` section when `search.method` names it. The pipeline calls a
method through this interface only:

    method = get_method(config, prepared)   # checks the section; nothing written yet
    architecture, searched = method.search(run, verbose)
    method.inherit(searched, architecture, model)   # train.inherit: start from the search

`searched` is whatever the method hands to training (a supernet, the best
trial's weights, or None); `load(run_path)` gives it back for a finished run.
"""

import copy
import difflib

from tfnas import schema
from tfnas.errors import ConfigError
from tfnas.registry import Registry

METHODS = Registry("search method", key="method")
DEFAULT_METHOD = "differentiable"


def register_method(cls):
    """Class decorator: makes a `SearchMethod` subclass available as `search.method`."""
    return METHODS.register(cls.name)(cls)


class SearchMethod:
    """Base class of search methods.

    Class attributes:
        name: the value of `search.method`.
        defaults: the section's keys and default values (besides `method`).
            A nested object is merged key by key with what a recipe gives,
            except the keys in `open_keys`, which a recipe replaces whole and
            the method checks itself (a penalty, an optimizer).
        schema: JSON Schema of the section's keys (`properties`).
        hints: `{key: what to do}` added to a schema error of that key.
    """

    name = None
    defaults = {}
    schema = {}
    hints = {}
    open_keys = ()

    def __init__(self, config, prepared):
        self.config = config
        self.section = config["search"]
        self.prepared = prepared
        self.space = prepared.space

    @classmethod
    def check_section(cls, section):
        """Checks of keys that depend on each other; raises `ConfigError`."""

    def search(self, run, verbose=2):
        """Runs the search in `run`; returns `(Architecture, searched)`.

        Writes its logs and checkpoints under `run` and continues an
        interrupted search from them; the pipeline saves the document.
        """
        raise NotImplementedError

    def distribution_scope(self):
        """The context `search` runs in: the scope of the config's tf.distribute strategy.
        A method whose library enters the strategy itself returns a null context."""
        from tfnas import distribute  # pylint: disable=import-outside-toplevel

        return distribute.scope(self.config["distribute"])

    def load(self, run_path):
        """`searched` of the finished search in `run_path` (None if the method keeps none)."""
        del run_path

    def inherit(self, searched, architecture, model):
        """Copies what the search learned into the derived `model`; returns whether it did."""
        del searched, architecture, model
        return False


class SupernetMethod(SearchMethod):
    """A method whose `searched` is a supernet: training starts from the weights of the
    candidates the architecture chose (`SearchSpace.inherit_weights`)."""

    def inherit(self, searched, architecture, model):
        if searched is None:
            return False
        architecture.search_space().inherit_weights(model, searched, architecture.choices)
        return True


def prefixed(key, function, *args, **kwargs):
    """`function(*args, **kwargs)`, with a `ConfigError` it raises prefixed by the config
    `key` it concerns ("search.optimizer: ...")."""
    try:
        return function(*args, **kwargs)
    except ConfigError as err:
        raise ConfigError(f"{key}: {err}") from None


def fill_section(section, prefix="search"):
    """The `search` section completed with its method's defaults, checked: unknown keys,
    schema, cross-key checks. Raises `ConfigError` naming the key."""
    if not isinstance(section, dict):
        raise ConfigError(f"{prefix!r} must be an object, got {section!r}.")
    cls = method_class(section.get("method", DEFAULT_METHOD))
    given = {k: v for k, v in section.items() if k != "method"}
    filled = {"method": cls.name, **_fill(cls.defaults, given, f"{prefix}.", cls)}
    _check_schema(cls, filled, prefix)
    cls.check_section(filled)
    return filled


def method_class(name):
    import tfnas.methods  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

    try:
        return METHODS.resolve(name)
    except ConfigError as err:
        raise ConfigError(f"search.method: {err}") from None


def _fill(defaults, given, prefix, cls):
    result = {}
    for key, value in given.items():
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=1)
            hint = cls.hints.get(f"{prefix}{key}"[len("search."):])
            raise ConfigError(
                f"Unknown configuration key '{prefix}{key}' for search method {cls.name!r}; "
                f"valid keys here are {sorted(defaults)}."
                + (f" Did you mean '{prefix}{close[0]}'?" if close and not hint else "")
                + (f" {hint}." if hint else ""))
    for key, default in defaults.items():
        if key not in given:
            result[key] = copy.deepcopy(default)
        elif (isinstance(default, dict) and f"{prefix}{key}"[len("search."):] not in
              cls.open_keys and isinstance(given[key], dict)):
            result[key] = _fill(default, given[key], f"{prefix}{key}.", cls)
        else:
            result[key] = copy.deepcopy(given[key])
    return result


def _check_schema(cls, section, prefix):
    full = {"type": "object", "properties": {"method": {"type": "string"}, **cls.schema}}
    error = schema.first_error(full, section)
    if error:
        key = ".".join(map(str, error[0]))
        hint = cls.hints.get(key)
        raise ConfigError(f"{prefix}.{key}: {error[1]}" + (f"; {hint}." if hint else "."))
