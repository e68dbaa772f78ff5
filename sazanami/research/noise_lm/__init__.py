"""placeholder"""

from sazanami.research.noise_lm.config import NoiseLMConfig
from sazanami.research.noise_lm.model import NoiseLM

__all__ = ["NoiseLM", "NoiseLMConfig"]
