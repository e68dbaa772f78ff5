"""The batched autoregressive loop.

Rows are (prompt, seed, parameters). Rows that share a prompt share its prefill:
the prompt runs through the model once and its keys/values are copied into each
row's slot of a pre-allocated cache. Each row writes its own positions, so
prompts of different lengths need no padding and a row's tokens do not depend
on its neighbours (up to float round-off of batched matmuls). Finished rows are
dropped from the batch so they stop costing compute.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from sazanami.errors import ParameterError
from sazanami.params import SamplingParams
from sazanami.sampling import RowSpec, SamplerBatch
from sazanami.seeds import derive_seed, fresh_seed

Prompt = str | list[dict[str, str]]


@dataclass
class RowRequest:
    """One row to generate: prompt token ids, its parameters and its own seed."""

    prompt_ids: list[int]
    params: SamplingParams
    seed: int
    prompt_index: int = 0
    index: int = 0
    tag: Any = None
    """Free slot for callers (search keeps its node here)."""
    noise: list[tuple[int, float]] | None = None
    """Optional mixture of seeded noise streams [(seed, weight)], Σw² = 1, used by the
    fluctuation instead of ``seed`` (zero-order noise search mixes a pivot with fresh noise)."""


@dataclass
class Completion:
    """One finished variant."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    """Log-probability of each generated token under the model (before any processing)."""
    seed: int
    finish_reason: str
    """``stop`` (end-of-sequence or a stop string) or ``length``."""
    prompt_tokens: int
    index: int = 0
    prompt_index: int = 0
    trace: list[dict[str, Any]] = field(default_factory=list)
    tag: Any = None

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def mean_logprob(self) -> float:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = {
            "index": self.index,
            "prompt_index": self.prompt_index,
            "text": self.text,
            "seed": self.seed,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "token_ids": self.token_ids,
            "logprobs": [round(x, 5) for x in self.logprobs],
        }
        if self.trace:
            out["trace"] = self.trace
        return out


@dataclass
class Delta:
    """What one row produced in one step (streaming)."""

    row: int
    text: str
    token_id: int | None
    finished: bool = False
    finish_reason: str | None = None


class _Row:
    """Mutable state of a running row."""

    def __init__(self, req: RowRequest, tokenizer: Any) -> None:
        self.req = req
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.logprobs: list[float] = []
        self.trace: list[dict[str, Any]] = []
        self.text = ""
        self.emitted = 0
        self.finish_reason: str | None = None
        self.stop = req.params.stop
        self.hold = max((len(s) for s in self.stop), default=0)

    def push(self, token: int, logprob: float, eos: bool) -> None:
        p = self.req.params
        if eos and not p.ignore_eos:
            self.finish_reason = "stop"
            return
        self.tokens.append(token)
        self.logprobs.append(logprob)
        self.text = self.tokenizer.decode(self.tokens)
        if self.stop:
            start = max(0, self.emitted - self.hold)
            cuts = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
            if cuts:
                self.text = self.text[: min(cuts)]
                self.finish_reason = "stop"
                return
        if len(self.tokens) >= p.max_tokens:
            self.finish_reason = "length"

    def delta(self) -> str:
        """New text safe to emit: holds back a partial UTF-8 char and a possible stop-string prefix."""
        end = len(self.text)
        if self.finish_reason is None:
            while end > self.emitted and self.text[end - 1] == "\ufffd":
                end -= 1
            end = max(self.emitted, end - self.hold)
        out = self.text[self.emitted : end]
        self.emitted = end
        return out

    def completion(self) -> Completion:
        r = self.req
        return Completion(
            text=self.text,
            token_ids=self.tokens,
            logprobs=self.logprobs,
            seed=r.seed,
            finish_reason=self.finish_reason or "length",
            prompt_tokens=len(r.prompt_ids),
            index=r.index,
            prompt_index=r.prompt_index,
            trace=self.trace,
            tag=r.tag,
        )


class Engine:
    """Batched generation over a :class:`~sazanami.backends.Backend`."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.tokenizer = backend.tokenizer
        self.eos = torch.tensor(sorted(self.tokenizer.eos_token_ids), dtype=torch.long)

    # -- prompts ---------------------------------------------------------------------------
    def encode(self, prompt: Prompt, raw: bool = False) -> list[int]:
        """Token ids of a prompt; the chat template is applied unless ``raw``."""
        if isinstance(prompt, list):
            text = self.tokenizer.apply_chat_template(prompt)
        elif raw:
            text = prompt
        else:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}])
        ids = self.tokenizer.encode(text)
        if not ids:
            raise ParameterError("prompt", "prompt must not be empty")
        return ids

    def rows_for(self, prompts: list[Prompt], params: SamplingParams, raw: bool = False) -> list[RowRequest]:
        """n rows per prompt with seeds derived from the request seed."""
        if not prompts:
            raise ParameterError("prompt", "at least one prompt is needed")
        seed = params.seed if params.seed is not None else fresh_seed()
        rows = []
        for p_index, prompt in enumerate(prompts):
            ids = self.encode(prompt, raw)
            for i in range(params.n):
                rows.append(RowRequest(ids, params, derive_seed(seed, p_index, i), p_index, i))
        return rows

    # -- public entry points ---------------------------------------------------------------
    def generate(self, prompts: Prompt | list[Prompt], params: SamplingParams | None = None, raw: bool = False) -> list[Completion]:
        """Generate ``params.n`` variants of each prompt; completions in (prompt, variant) order."""
        params = params or SamplingParams()
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], dict)):
            prompts = [prompts]  # type: ignore[list-item]
        fl = params.fluctuation
        if fl is not None and fl.beams is not None:
            return self.beam_search(prompts, params, raw)  # type: ignore[arg-type]
        return self.run(self.rows_for(prompts, params, raw))  # type: ignore[arg-type]

    def beam_search(self, prompts: list[Prompt], params: SamplingParams, raw: bool = False) -> list[Completion]:
        """Stochastic beam search (the fluctuation's ``beams`` entry): ``width`` samples per prompt."""
        from sazanami.beams import beams_from_entry, stochastic_beam_search

        width, beta = beams_from_entry(params.fluctuation.beams)
        out = []
        for i, prompt in enumerate(prompts):
            seed = derive_seed(params.seed, i) if params.seed is not None else None
            for c in stochastic_beam_search(self, prompt, params.replace(seed=seed), width, beta, raw):
                c.prompt_index = i
                out.append(c)
        return out

    def stream(self, prompts: Prompt | list[Prompt], params: SamplingParams | None = None, raw: bool = False) -> Iterator[list[Delta]]:
        """Yield, per step, the text each row added (row index = position in (prompt, variant) order)."""
        params = params or SamplingParams()
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], dict)):
            prompts = [prompts]  # type: ignore[list-item]
        out: list[Completion] = []
        yield from self.steps(self.rows_for(prompts, params, raw), out)  # type: ignore[arg-type]

    def run(self, rows: list[RowRequest]) -> list[Completion]:
        """Generate every row; completions in the order of ``rows``."""
        out: list[Completion] = []
        for _ in self.steps(rows, out):
            pass
        return out

    # -- the loop --------------------------------------------------------------------------
    @torch.inference_mode()
    def steps(self, requests: list[RowRequest], out: list[Completion]) -> Iterator[list[Delta]]:
        """The generation loop; yields per-step deltas and fills ``out`` in row order."""
        backend = self.backend
        B = len(requests)
        rows = [_Row(r, self.tokenizer) for r in requests]
        capacity = max(len(r.prompt_ids) + r.params.max_tokens for r in requests) + 1
        cache = backend.new_cache(B, capacity)
        sampler = SamplerBatch(
            [RowSpec(r.params, r.seed, r.prompt_ids, r.noise) for r in requests], backend.vocab_size, backend.hidden_size
        )
        lengths = torch.tensor([len(r.prompt_ids) for r in requests], dtype=torch.long)

        # Prefill: each distinct prompt runs once; its cache is copied to its rows.
        logits = torch.empty(B, backend.vocab_size)
        groups: dict[tuple[int, ...], list[int]] = {}
        for b, r in enumerate(requests):
            groups.setdefault(tuple(r.prompt_ids), []).append(b)
        for ids, members in groups.items():
            tmp = backend.new_cache(1, len(ids))
            last = backend.forward(torch.tensor([ids]), tmp, torch.zeros(1, dtype=torch.long))
            cache.copy_rows(tmp, 0, torch.tensor(members), len(ids))
            logits[members] = last

        active = list(range(B))  # rows[active[i]] is batch row i
        while True:
            trace = any(rows[a].req.params.trace for a in active)
            tokens, info = sampler.sample(logits, trace=trace)  # (B,)
            logprobs = torch.log_softmax(logits, -1).gather(-1, tokens[:, None]).squeeze(-1)
            is_eos = torch.isin(tokens, self.eos)
            deltas = []
            tok_list, lp_list, eos_list = tokens.tolist(), logprobs.tolist(), is_eos.tolist()
            for i, a in enumerate(active):
                row = rows[a]
                row.push(tok_list[i], lp_list[i], eos_list[i])
                if row.req.params.trace:
                    row.trace.append({k: v[i] for k, v in info.items()} | {"token": tok_list[i], "logprob": lp_list[i]})
                deltas.append(Delta(a, row.delta(), tok_list[i], row.finish_reason is not None, row.finish_reason))
            yield deltas
            keep = [i for i, a in enumerate(active) if rows[a].finish_reason is None]
            if not keep:
                break
            if len(keep) < len(active):
                keep_t = torch.tensor(keep)
                cache = cache.select(keep_t)
                sampler.select(keep_t)
                lengths = lengths[keep_t]
                tokens = tokens[keep_t]
                active = [active[i] for i in keep]
            logits = backend.forward(tokens[:, None], cache, lengths, sampler.hidden_hook(backend.num_layers))
            lengths = lengths + 1
        out.extend(r.completion() for r in rows)


def timed(fn: Any) -> tuple[Any, float]:
    """``(fn(), seconds)`` — a small helper for benchmarks and progress reports."""
    t = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t
