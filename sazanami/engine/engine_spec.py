"""Engine specs: which model on which backend, as a small picklable object.

An :class:`EngineSpec` is what the CLI's ``--model``/``--backend`` options and a Ray replica
need to build an engine in their own process: ``spec.open()`` returns an
:class:`~sazanami.engine.loop.Engine` over a backend :func:`~sazanami.models.load_for` loads
(``torch``, ``llamacpp``, ``auto``), or a :class:`~sazanami.backends.vllm.VllmEngine`
(``vllm``, in the venv that ``make vllm`` builds: vLLM runs its own loop).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sazanami.backends.tokenizer import Tokenizer
from sazanami.engine.loop import Engine
from sazanami.errors import ParameterError
from sazanami.models import BACKENDS, DEFAULT_MODEL, load, load_for

ENGINE_BACKENDS = (*BACKENDS, "vllm")
"""Backends an :class:`EngineSpec` can open: the model backends plus ``vllm``."""


@dataclass(frozen=True)
class EngineSpec:
    """A model on a backend; ``open()`` builds the engine in the calling process."""

    model: str = DEFAULT_MODEL
    """Registry name (``smollm2-135m``, ``tiny-random`` …), Hugging Face directory or ``.gguf`` file."""
    backend: str = "auto"
    """auto (torch, or llama.cpp for GGUF-only models and one row), torch, llamacpp or vllm (its own venv)."""
    threads: int | None = None
    """CPU threads of the process that opens it (torch and llama.cpp; None: their default)."""
    prefix_cache: bool = True
    """The torch engine's prefix cache (vLLM has its own)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Backend options (``vllm``: ``vllm.LLM`` arguments such as ``max_num_seqs``)."""

    def __post_init__(self) -> None:
        if self.backend not in ENGINE_BACKENDS:
            raise ParameterError(
                "backend", f"backend must be one of {', '.join(ENGINE_BACKENDS)}, got {self.backend!r}"
            )
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ParameterError("threads", f"threads must be an integer in [1, inf), got {self.threads!r}")

    def open(self, rows: int = 1, fluctuation: Any = None) -> Engine:
        """The engine, built here; ``auto`` picks the backend for ``rows`` rows with ``fluctuation``."""
        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)
        if self.backend == "vllm":
            from sazanami.backends.vllm import VllmEngine

            return VllmEngine(self.model, **self.options)
        backend = load_for(self.model, self.backend, rows, fluctuation, self.threads)
        return Engine(backend, prefix_cache=self.prefix_cache)

    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer (a driver that only encodes and decodes)."""
        if self.backend == "vllm":
            from sazanami.backends.vllm import model_dir

            return Tokenizer.from_dir(model_dir(self.model))
        return load(self.model, backend="auto").tokenizer
