"""Generating the frontier's samples: a cache on disk, batched engine runs, and clean re-scoring.

Generations are cached in a JSONL file keyed by model, sampling parameters, prompt, seed,
``max_tokens`` and a fingerprint of the generating code (:func:`code_fingerprint`), so a rerun
only generates what changed.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sazanami.evals.frontier.methods import Setting
from sazanami.evals.frontier.prompts import PromptItem

if TYPE_CHECKING:
    from sazanami.engine.loop import Completion, Engine

#: Rows per engine call: bounds memory (B × V logits, KV cache) and keeps progress moving.
MAX_BATCH = 64


class GenerationCache:
    """Completions on disk, one JSON object per line, looked up by :meth:`key`.

    Appends only; the last record of a key wins. A truncated last line (interrupted run)
    is skipped.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.records: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self.records[rec["key"]] = rec

    @staticmethod
    def key(model: str, setting: Setting, prompt: PromptItem, seed: int, max_tokens: int) -> str:
        parts = [model, setting.key, prompt.id, prompt.text, str(seed), str(max_tokens)]
        return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def put(self, records: list[dict[str, Any]]) -> None:
        for rec in records:
            self.records[rec["key"]] = rec
        if self.path is not None and records:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                for rec in records:
                    f.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")


def score_completions(
    backend: Any, prompt_ids: list[int], completions: list[list[int]]
) -> list[tuple[list[float], list[float]]]:
    """Log-probability and entropy (nats) of each completion token under the clean model.

    One prefill of the prompt, copied to every row, then one teacher-forced pass over the
    right-padded completions (padding only follows a row's tokens, so it changes nothing
    they see). Returns ``(logprobs, entropies)`` per completion, each of its length.
    """
    from sazanami.sampling.sampler import entropy

    k = len(completions)
    P, T = len(prompt_ids), max((len(c) for c in completions), default=0)
    if T == 0:
        return [([], []) for _ in completions]
    with torch.inference_mode():
        tmp = backend.new_cache(1, P)
        last = backend.forward(torch.tensor([prompt_ids]), tmp, torch.zeros(1, dtype=torch.long))  # (1, V)
        cache = backend.new_cache(k, P + T)
        cache.copy_rows(tmp, 0, torch.arange(k), P)
        ids = torch.tensor([c + [0] * (T - len(c)) for c in completions])  # (k, T)
        logits = backend.forward(ids, cache, torch.full((k,), P, dtype=torch.long), last_only=False)  # (k, T, V)
        # The distribution of completion token t: the prefill's for t = 0, position t-1's after.
        dists = torch.cat([last.expand(k, 1, -1), logits[:, :-1]], dim=1).float()  # (k, T, V)
        logp = dists.log_softmax(-1).gather(-1, ids[:, :, None]).squeeze(-1)  # (k, T)
        ent = entropy(dists.reshape(k * T, -1)).view(k, T)
    return [(logp[i, : len(c)].tolist(), ent[i, : len(c)].tolist()) for i, c in enumerate(completions)]


def _record(
    key: str,
    setting: Setting,
    prompt: PromptItem,
    c: Completion,
    logprobs: list[float],
    entropies: list[float],
    rescored: bool,
) -> dict[str, Any]:
    return {
        "key": key,
        "setting": setting.key,
        "prompt": prompt.id,
        "seed": c.seed,
        "text": c.text,
        "token_ids": c.token_ids,
        "logprobs": [round(x, 5) for x in logprobs],
        "entropies": [round(x, 5) for x in entropies],
        "finish_reason": c.finish_reason,
        "rescored": rescored,
    }


def generate_setting(
    engine: Engine,
    setting: Setting,
    prompts: list[PromptItem],
    samples: int,
    max_tokens: int,
    seed: int,
    cache: GenerationCache,
    on_rows: Callable[[int], None] = lambda n: None,
) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """The ``samples`` records of every prompt under ``setting``, generating what the cache lacks.

    Returns ``(records by prompt id, rows generated)``. Sample j of prompt p has seed
    ``derive_seed(seed, p.id, j)`` under every setting (common random numbers).
    """
    from sazanami.sampling.rows import RowRequest
    from sazanami.seeds import derive_seed

    params = setting.sampling_params(max_tokens)
    model = _model_key(engine)
    out: dict[str, list[dict[str, Any] | None]] = {p.id: [None] * samples for p in prompts}
    todo: list[tuple[RowRequest, str]] = []
    encoded: dict[str, list[int]] = {}
    for p_index, p in enumerate(prompts):
        for j in range(samples):
            s = derive_seed(seed, p.id, j)
            key = GenerationCache.key(model, setting, p, s, max_tokens)
            rec = cache.get(key)
            if rec is not None:
                out[p.id][j] = rec
                continue
            if p.id not in encoded:
                encoded[p.id] = engine.encode(p.text)
            todo.append((RowRequest(encoded[p.id], params, s, p_index, j), key))
    on_rows(samples * len(prompts) - len(todo))
    for start in range(0, len(todo), MAX_BATCH):
        chunk = todo[start : start + MAX_BATCH]
        completions = engine.run([r for r, _ in chunk])
        by_prompt: dict[int, list[int]] = {}
        for i, (r, _) in enumerate(chunk):
            by_prompt.setdefault(r.prompt_index, []).append(i)
        records: list[dict[str, Any] | None] = [None] * len(chunk)
        for p_index, members in by_prompt.items():
            p = prompts[p_index]
            if setting.perturbs_forward:
                scores = score_completions(engine.backend, encoded[p.id], [completions[i].token_ids for i in members])
            else:
                # The trace has one more step than tokens when the row ended on end-of-sequence.
                scores = [
                    (
                        completions[i].logprobs,
                        [t["entropy"] for t in completions[i].trace][: len(completions[i].logprobs)],
                    )
                    for i in members
                ]
            for i, (lp, ent) in zip(members, scores, strict=True):
                records[i] = _record(chunk[i][1], setting, p, completions[i], lp, ent, setting.perturbs_forward)
        done = [r for r in records if r is not None]
        cache.put(done)
        for (r, _), rec in zip(chunk, done, strict=True):
            out[prompts[r.prompt_index].id][r.index] = rec
        on_rows(len(chunk))
    return {k: [r for r in v if r is not None] for k, v in out.items()}, len(todo)


def _model_key(engine: Engine) -> str:
    """Model name, dtype (or the backend, where it has none) and :func:`code_fingerprint`:
    what else decides a seeded row's tokens."""
    backend = engine.backend
    dtype = str(getattr(backend, "dtype", "")).replace("torch.", "")
    if not dtype and hasattr(backend, "capabilities"):
        dtype = backend.capabilities.backend  # llamacpp: the GGUF's own types; its rows differ from torch's
    return f"{getattr(backend, 'name', type(backend).__name__)}/{dtype}@{code_fingerprint()}"


#: Modules whose source decides what a seeded row generates.
GENERATION_MODULES = ("engine", "sampling", "params", "fluctuation", "noise", "seeds", "tokenizer", "backends.llama")


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of the source of :data:`GENERATION_MODULES`, part of every cache key.

    Generations made by other code (an edited noise source, a new sampler step) are not
    reused, at the price of regenerating after any edit to those files.
    """
    h = hashlib.blake2b(digest_size=6)
    for name in GENERATION_MODULES:
        spec = importlib.util.find_spec(f"sazanami.{name}")
        if spec is not None and spec.origin:
            h.update(Path(spec.origin).read_bytes())
    return h.hexdigest()
