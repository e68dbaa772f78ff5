"""The ``speculative`` parameter of :class:`~sazanami.sampling.params.SamplingParams`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from sazanami.errors import ParameterError, check_int, check_known

SOURCES = ("prompt", "corpus", "siblings")
"""Where drafts come from: the row's prompt and own output, a corpus index, the other rows of
the request (with the same prompt)."""

MAX_DRAFT = 64
"""Most tokens one row drafts per step (llama.cpp runs a row's tokens in pieces of at most 63,
where its logits stay bit-identical to one-token steps, so longer drafts are split there)."""

DEFAULT_MAX_DRAFT = 16


@dataclass(frozen=True)
class Speculative:
    """Which draft sources a row uses and how long its drafts may grow (validated)."""

    sources: tuple[str, ...] = ("prompt",)
    """Draft sources, from :data:`SOURCES`; the longest match among them drafts."""
    max_draft: int = DEFAULT_MAX_DRAFT
    """Most tokens drafted per step; in [1, 64]. The adaptive length stays below it."""
    corpus: str | None = None
    """A corpus index (the folder ``sazanami index -o`` wrote); needed by the ``corpus`` source."""
    exact: bool = True
    """Tokens identical to plain decoding: a step carries only as many drafted tokens as keep
    every row's logits bit-identical to a one-token step (the backend's ``draft_limits``; on
    llama.cpp with Qwen2.5-Coder at batch 1, 6). False: up to ``max_draft`` per row, verified
    by whatever kernel the backend picks for the step's size — every token is still a draw from
    the model with the row's seed, but a near-tie may flip where those kernels round
    differently (docs/SPECULATIVE.md measures how often)."""

    def __post_init__(self) -> None:
        sources = self.sources
        if isinstance(sources, str):
            sources = (sources,)
        if not isinstance(sources, (tuple, list)) or not sources:
            raise ParameterError(
                "speculative.sources", f"speculative.sources must be a non-empty list of {SOURCES}, got {sources!r}"
            )
        for s in sources:
            if s not in SOURCES:
                raise ParameterError(
                    "speculative.sources", f"speculative.sources must be among {', '.join(SOURCES)}, got {s!r}"
                )
        if len(set(sources)) != len(sources):
            raise ParameterError("speculative.sources", f"speculative.sources repeats a source: {list(sources)}")
        object.__setattr__(self, "sources", tuple(sources))
        check_int("speculative.max_draft", self.max_draft, 1, MAX_DRAFT)
        if not isinstance(self.exact, bool):
            raise ParameterError("speculative.exact", f"speculative.exact must be true or false, got {self.exact!r}")
        if self.corpus is not None and (not isinstance(self.corpus, str) or not self.corpus):
            raise ParameterError("speculative.corpus", f"speculative.corpus must be a path, got {self.corpus!r}")
        if "corpus" in self.sources and self.corpus is None:
            raise ParameterError(
                "speculative.corpus", "the corpus source needs speculative.corpus: an index built by `sazanami index`"
            )
        if self.corpus is not None and "corpus" not in self.sources:
            raise ParameterError(
                "speculative.corpus", f"speculative.corpus is given but the sources {list(self.sources)} lack 'corpus'"
            )

    @classmethod
    def parse(cls, value: Any) -> Speculative | None:
        """From a source name (``"prompt"``), a list of them, a mapping of the fields, the CLI's
        ``prompt,corpus=PATH,max_draft=8`` or its JSON; None, False or ``""`` turn it off."""
        if value is None or value is False or value == "" or isinstance(value, cls):
            return value or None
        if value is True:
            return cls()
        if isinstance(value, str):
            text = value.strip()
            if text.startswith(("{", "[")):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ParameterError("speculative", f"speculative is not valid JSON: {exc}") from None
            else:
                return cls._from_items(text)
        if isinstance(value, (list, tuple)):
            return cls(sources=tuple(value))
        if isinstance(value, dict):
            known = [f.name for f in dataclasses.fields(cls)]
            check_known(value, known, "speculative key", prefix="speculative.")
            return cls(**value)
        raise ParameterError("speculative", f"speculative must be a source name, a list or an object, got {value!r}")

    @classmethod
    def _from_items(cls, text: str) -> Speculative:
        """``prompt,siblings,corpus=PATH,max_draft=8,exact=false`` (the CLI's spelling)."""
        sources: list[str] = []
        fields: dict[str, Any] = {}
        for item in (x.strip() for x in text.split(",")):
            key, eq, val = item.partition("=")
            if not eq:
                sources.append(key)
            elif key == "corpus":
                sources.append("corpus")
                fields["corpus"] = val
            elif key == "exact":
                if val.strip().lower() not in ("true", "false"):
                    raise ParameterError("speculative.exact", f"speculative.exact must be true or false, got {val!r}")
                fields["exact"] = val.strip().lower() == "true"
            elif key == "max_draft":
                if not val.strip().isdigit():
                    raise ParameterError(
                        "speculative.max_draft", f"speculative.max_draft must be an integer, got {val!r}"
                    )
                fields["max_draft"] = int(val)
            else:
                check_known([key], ("corpus", "exact", "max_draft"), "speculative key", prefix="speculative.")
        return cls(sources=tuple(sources) or ("prompt",), **fields)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sources": list(self.sources), "max_draft": self.max_draft}
        if self.corpus is not None:
            out["corpus"] = self.corpus
        if not self.exact:
            out["exact"] = False
        return out
