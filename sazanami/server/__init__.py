"""An OpenAI-compatible HTTP API with fluctuation and search, and a web playground.

>>> from sazanami.server import create_app, Limits
>>> app = create_app("tiny-random", Limits(max_tokens=64))   # any ASGI server runs it
"""

from sazanami.server.app import create_app
from sazanami.server.limits import Limits

__all__ = ["Limits", "create_app"]
