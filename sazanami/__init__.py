"""sazanami: noise as a seedable control signal for language-model generation."""

from sazanami.engine import Completion, Engine, RowRequest
from sazanami.errors import ParameterError, SazanamiError
from sazanami.models import load
from sazanami.params import SamplingParams

__version__ = "0.1.0"
__all__ = ["Completion", "Engine", "ParameterError", "RowRequest", "SamplingParams", "SazanamiError", "load"]
