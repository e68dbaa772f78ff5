"""sazanami: noise as a seedable control signal for language-model generation."""

__version__ = "0.1.0"
