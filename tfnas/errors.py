"""The errors tfnas raises for bad input, gathered for the command line."""

from tfnas.architecture import ArchitectureError
from tfnas.config import ConfigError
from tfnas.data import DatasetUnavailableError
from tfnas.deploy import ExportError
from tfnas.deploy.android import AndroidBenchmarkError
from tfnas.deploy.latency import LatencyTableError
from tfnas.run_dir import RunExistsError
from tfnas.spaces import SearchSpaceError

USER_ERRORS = (AndroidBenchmarkError, ArchitectureError, ConfigError, DatasetUnavailableError,
               ExportError, LatencyTableError, RunExistsError, SearchSpaceError)
