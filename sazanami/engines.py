"""Engine specs: which model on which backend, as a small picklable object.

An :class:`EngineSpec` is what the CLI's ``--model``/``--backend`` options and a Ray
replica need to build an engine in their own process: ``spec.open()`` returns an
:class:`~sazanami.engine.Engine` (``torch``) or a :class:`~sazanami.backends.vllm.VllmEngine`
(``vllm``, in the venv that ``make vllm`` builds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sazanami.engine import Engine
from sazanami.errors import ParameterError
from sazanami.models import DEFAULT_MODEL, load
from sazanami.tokenizer import Tokenizer

ENGINE_BACKENDS = ("torch", "vllm")
"""Backends an :class:`EngineSpec` can open (``torch`` runs sazanami's own loop)."""


@dataclass(frozen=True)
class EngineSpec:
    """A model on a backend; ``open()`` builds the engine in the calling process."""

    model: str = DEFAULT_MODEL
    """Registry name (``smollm2-135m``, ``tiny-random``) or a Hugging Face directory."""
    backend: str = "torch"
    """``torch`` or ``vllm``."""
    threads: int | None = None
    """torch CPU threads of the process that opens it (None: torch's default)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Backend options (``vllm``: ``vllm.LLM`` arguments such as ``max_num_seqs``)."""

    def __post_init__(self) -> None:
        if self.backend not in ENGINE_BACKENDS:
            raise ParameterError(
                "backend", f"backend must be one of {', '.join(ENGINE_BACKENDS)}, got {self.backend!r}"
            )
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ParameterError("threads", f"threads must be an integer in [1, inf), got {self.threads!r}")

    def open(self) -> Engine:
        """The engine this spec names, built here."""
        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)
        if self.backend == "vllm":
            from sazanami.backends.vllm import VllmEngine

            return VllmEngine(self.model, **self.options)
        return Engine(load(self.model))

    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer alone (a driver that only encodes and decodes)."""
        if self.backend == "vllm":
            from sazanami.backends.vllm import model_dir

            return Tokenizer.from_dir(model_dir(self.model))
        return load(self.model).tokenizer


def open_engine(model: str = DEFAULT_MODEL, backend: str = "torch") -> Engine:
    """``EngineSpec(model, backend).open()``: what the CLI commands call."""
    return EngineSpec(model, backend).open()
