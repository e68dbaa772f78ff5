"""OpenAI response objects: completions, chat completions, their stream chunks, errors.

Two shapes share everything but names: ``text_completion`` choices carry ``text``, chat
choices carry ``message`` (``delta`` when streamed). sazanami adds fields the clients keep
as extras: per choice ``seed`` (rerun a variant alone) and, when asked, ``trace`` and
``spans`` (injected tool results); top level ``seed`` and ``search``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sazanami import __version__

FINGERPRINT = f"sazanami-{__version__}"


@dataclass
class Choice:
    """What one variant produced, as the response needs it."""

    index: int
    text: str = ""
    finish_reason: str | None = None
    tokens: int = 0
    seed: int | None = None
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None
    trace: list[dict[str, Any]] | None = None
    spans: list[dict[str, Any]] | None = None
    top_logprobs: list[list[tuple[int, float]]] | None = None
    """Per token, the most likely (id, log-prob) alternatives under the raw model distribution."""
    tool_calls: list[dict[str, Any]] | None = None
    """OpenAI function calls the output made (``text`` is then the content before them, or None)."""
    drafted: int = 0
    """Tokens speculative decoding drafted for it."""
    accepted: int = 0
    """Of them, those its sampler drew."""


class Shape:
    """Names and ids of one endpoint's objects (``chat`` or not)."""

    def __init__(self, chat: bool, model: str) -> None:
        self.chat = chat
        self.model = model
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def _head(self, obj: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
        }

    # -- whole responses ----------------------------------------------------------------------
    def response(
        self, choices: list[Choice], usage: dict[str, Any], tokenizer: Any, want_logprobs: bool, **extra: Any
    ) -> dict[str, Any]:
        out = self._head("chat.completion" if self.chat else "text_completion")
        out["choices"] = [self.choice(c, tokenizer, want_logprobs) for c in choices]
        out["usage"] = usage
        out.update({k: v for k, v in extra.items() if v is not None})
        return out

    def choice(self, c: Choice, tokenizer: Any, want_logprobs: bool) -> dict[str, Any]:
        lp = logprobs_object(c, tokenizer, self.chat) if want_logprobs else None
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": c.text}
            if c.tool_calls:  # OpenAI's content is null for calls with no text before them
                message = {"role": "assistant", "content": c.text or None, "tool_calls": c.tool_calls}
            out: dict[str, Any] = {"index": c.index, "message": message}
        else:
            out = {"index": c.index, "text": c.text}
        out |= {"logprobs": lp, "finish_reason": c.finish_reason}
        return out | _extras(c)

    # -- stream chunks ------------------------------------------------------------------------
    def chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None, **extra: Any) -> str:
        out = self._head("chat.completion.chunk" if self.chat else "text_completion")
        out["choices"] = choices
        if usage is not None:
            out["usage"] = usage
        out.update({k: v for k, v in extra.items() if v is not None})
        return sse(out)

    def start(self, index: int) -> dict[str, Any]:
        """The first chunk of a chat choice announces the role (completions have none)."""
        return {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}

    def piece(self, index: int, text: str) -> dict[str, Any]:
        if self.chat:
            return {"index": index, "delta": {"content": text}, "logprobs": None, "finish_reason": None}
        return {"index": index, "text": text, "logprobs": None, "finish_reason": None}

    def delta(self, index: int, delta: dict[str, Any]) -> dict[str, Any]:
        """A chat chunk's choice carrying ``delta`` (content, or ``tool_calls`` pieces)."""
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}

    def end(self, c: Choice, tokenizer: Any = None, want_logprobs: bool = False) -> dict[str, Any]:
        """A choice's last chunk: its finish reason (and what is known only at the end)."""
        lp = logprobs_object(c, tokenizer, self.chat) if want_logprobs and c.logprobs is not None else None
        body: dict[str, Any] = {"delta": {}} if self.chat else {"text": ""}
        return {"index": c.index, **body, "logprobs": lp, "finish_reason": c.finish_reason} | _extras(c)


def _extras(c: Choice) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if c.seed is not None:
        out["seed"] = c.seed
    if c.trace:
        out["trace"] = c.trace
    if c.spans:
        out["spans"] = c.spans
    return out


def logprobs_object(c: Choice, tokenizer: Any, chat: bool) -> dict[str, Any] | None:
    """Each generated token's log-prob, in the endpoint's format.

    Top alternatives (``top_logprobs`` / completions' ``logprobs`` = k) are the k most likely
    tokens under the model's raw distribution (log_softmax of its logits, before penalties,
    temperature, truncation or noise), as vLLM returns by default.
    """
    if c.logprobs is None:
        return None
    texts = [tokenizer.token_text(t) for t in c.token_ids]
    tops = c.top_logprobs or [[] for _ in texts]
    if chat:
        return {
            "content": [
                {
                    "token": t,
                    "logprob": round(lp, 5),
                    "bytes": list(t.encode()),
                    "top_logprobs": [
                        {"token": (a := tokenizer.token_text(i)), "logprob": round(v, 5), "bytes": list(a.encode())}
                        for i, v in top
                    ],
                }
                for t, lp, top in zip(texts, c.logprobs, tops, strict=True)
            ],
            "refusal": None,
        }
    offsets, pos = [], 0
    for t in texts:
        offsets.append(pos)
        pos += len(t)
    return {
        "tokens": texts,
        "token_logprobs": [round(x, 5) for x in c.logprobs],
        "top_logprobs": [{tokenizer.token_text(i): round(v, 5) for i, v in top} for top in tops]
        if c.top_logprobs
        else None,
        "text_offset": offsets,
    }


def usage(
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int | None = None,
    predictions: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """OpenAI's usage object; ``cached_tokens`` (prompt tokens the prefix cache served) goes
    under ``prompt_tokens_details`` when known; ``predictions`` (drafted, accepted tokens of
    speculative decoding) under ``completion_tokens_details`` as OpenAI's predicted outputs
    report theirs (accepted / rejected prediction tokens)."""
    out: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    if predictions is not None:
        drafted, accepted = predictions
        out["completion_tokens_details"] = {
            "accepted_prediction_tokens": accepted,
            "rejected_prediction_tokens": drafted - accepted,
        }
    return out


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def sse(obj: Any) -> str:
    """One server-sent event carrying ``obj`` as JSON."""
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


DONE = "data: [DONE]\n\n"
