"""keras-tuner oracles: the ENAS controller (`EnasOracle`), regularized evolution
(`EvolutionOracle`)."""

from tfnas.tuners.controller import Controller
from tfnas.tuners.enas_oracle import EnasOracle, choices_of
from tfnas.tuners.evolution import EvolutionOracle

__all__ = ["Controller", "EnasOracle", "EvolutionOracle", "choices_of"]
