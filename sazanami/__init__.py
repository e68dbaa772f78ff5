"""sazanami: noise as a seedable control signal for language-model generation."""

from sazanami.engine.loop import Engine
from sazanami.errors import ParameterError, SazanamiError
from sazanami.models import load
from sazanami.sampling.beam_params import BeamParams
from sazanami.sampling.params import SamplingParams
from sazanami.sampling.rows import Completion, RowRequest

__version__ = "0.1.0"
__all__ = [
    "BeamParams",
    "Completion",
    "Engine",
    "ParameterError",
    "RowRequest",
    "SamplingParams",
    "SazanamiError",
    "load",
]
