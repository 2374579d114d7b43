"""The base class of every error tfnas raises for bad input.

The command line prints a `TfnasError` as one line and exits with status 2;
anything else is a bug in tfnas and keeps its traceback. Each module defines
its own subclass (`ConfigError`, `ArchitectureError`, `ExportError`, ...), so
this module imports nothing.
"""


class TfnasError(Exception):
    """Bad input, named with its fix: a config value, a file, a dataset, a device."""

    def __str__(self):
        # One line: the command line prints errors on a single line.
        return " ".join(super().__str__().split())


class UsageError(TfnasError):
    """The command line was given a missing, extra or conflicting flag."""


class ConfigError(TfnasError, ValueError):
    """A configuration key or value is not valid."""
