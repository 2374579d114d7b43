"""keras-tuner oracles: the ENAS controller (`EnasOracle`)."""

from tfnas.tuners.controller import Controller
from tfnas.tuners.enas_oracle import EnasOracle, choices_of

__all__ = ["Controller", "EnasOracle", "choices_of"]
