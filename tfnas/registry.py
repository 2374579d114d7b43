"""One idiom for everything a config names: spaces, methods, mixing rules, penalties, costs,
optimizers.

    PENALTIES = Registry("penalty")

    @PENALTIES.register("threshold")
    class ThresholdProductPenalty(Penalty): ...

    PENALTIES.get({"type": "threshold", "beta": 0.8})   # or PENALTIES.get("threshold")

`get` takes a name or `{"type": name, **arguments}` and calls what was
registered with the arguments (and any keyword arguments the caller adds). An
unknown name, or arguments the constructor rejects, is a `ConfigError` that
lists the choices. The names live in the registry only; nothing copies them.
"""

import difflib

from tfnas import schema
from tfnas.errors import ConfigError


class Registry:
    """Names → constructors of one kind of thing.

    Example:

    >>> shapes = Registry("shape")
    >>> @shapes.register("square")
    ... def square(side=1.0):
    ...     return side * side
    >>> shapes.get({"type": "square", "side": 3.0})
    9.0
    >>> shapes.names()
    ['square']
    """

    def __init__(self, kind, error=ConfigError, key="type"):
        self.kind, self.error, self.key = kind, error, key
        self._entries, self._aliases, self._schemas = {}, {}, {}

    def register(self, name, aliases=(), arguments=None):
        """Decorator: registers a class or factory function under `name` (and `aliases`).

        `arguments` is a JSON Schema of the arguments a config may pass, `{name:
        schema}` (types, ranges): `check` holds them to it, so that a value the
        constructor would take but misread (keras-tuner reads `max_trials: 0` as no
        limit) is refused before a run starts."""
        def decorate(target):
            if name in self._entries and self._entries[name] is not target:
                raise ValueError(f"A {self.kind} named {name!r} is registered already.")
            self._entries[name] = target
            if arguments is not None:
                self._schemas[name] = {"type": "object", "properties": arguments}
            for alias in aliases:
                self._aliases[alias] = name
            return target
        return decorate

    def names(self):
        return sorted(self._entries)

    def resolve(self, name):
        """The constructor registered as `name` (or an alias); an error lists the choices."""
        name = self._aliases.get(name, name)
        if name not in self._entries:
            close = difflib.get_close_matches(str(name), self.names() + list(self._aliases),
                                              n=1)
            raise self.error(f"Unknown {self.kind} {name!r}; choose one of "
                             f"{self.names() + sorted(self._aliases)}."
                             + (f" Did you mean {close[0]!r}?" if close else ""))
        return self._entries[name]

    def split(self, config):
        """`(name, arguments)` of a name or a `{"type": name, ...}` object."""
        if isinstance(config, str):
            return self._aliases.get(config, config), {}
        if not isinstance(config, dict) or not isinstance(config.get(self.key), str):
            raise self.error(f"A {self.kind} is a name or an object with a {self.key!r} "
                             f"naming one of {self.names()}; got {config!r}.")
        arguments = dict(config)
        name = arguments.pop(self.key)
        return self._aliases.get(name, name), arguments

    def check(self, config, **kwargs):
        """Checks that `config` names an entry and that its arguments (with `kwargs`) fit
        the constructor's signature, without building it; returns `(name, arguments)`."""
        import inspect  # pylint: disable=import-outside-toplevel

        name, arguments = self.split(config)
        try:
            inspect.signature(self.resolve(name)).bind(**arguments, **kwargs)
        except TypeError as err:
            raise self.error(f"Bad arguments for the {self.kind} {name!r}: {err}") from None
        error = name in self._schemas and schema.first_error(self._schemas[name], arguments)
        if error:
            raise self.error(f"{'.'.join(map(str, error[0]))}: {error[1]} (an argument of the "
                             f"{self.kind} {name!r}).")
        return name, arguments

    def get(self, config, **kwargs):
        """Builds the thing `config` names, passing its arguments and `kwargs`."""
        name, arguments = self.split(config)
        target = self.resolve(name)
        try:
            return target(**arguments, **kwargs)
        except self.error:
            raise
        except ConfigError as err:
            raise self.error(str(err)) from None
        except (TypeError, ValueError, KeyError) as err:
            raise self.error(f"Bad arguments for the {self.kind} {name!r}: "
                             f"{type(err).__name__}: {err}") from None
