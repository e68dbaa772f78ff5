"""The frontier's prompt set: a JSONL file of ``{"id": ..., "prompt": ...}`` objects."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sazanami.errors import ParameterError

#: The development prompt set shipped in the repository.
DEFAULT_PROMPTS = Path(__file__).resolve().parents[3] / "bench" / "data" / "creative_dev.jsonl"


@dataclass(frozen=True)
class PromptItem:
    id: str
    text: str


def load_prompts(path: str | Path, limit: int | None = None) -> list[PromptItem]:
    """Read a JSONL prompt file: one ``{"id": ..., "prompt": ...}`` object per line."""
    path = Path(path)
    if not path.exists():
        raise ParameterError("prompts", f"prompts file {str(path)!r} does not exist")
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            items.append(PromptItem(str(obj.get("id", f"p{n:03d}")), str(obj["prompt"])))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ParameterError("prompts", f"{path}:{n}: each line must be a JSON object with a 'prompt'") from exc
    if limit is not None:
        items = items[:limit]
    if not items:
        raise ParameterError("prompts", f"prompts file {str(path)!r} holds no prompt")
    if len({p.id for p in items}) != len(items):
        raise ParameterError("prompts", f"prompt ids in {str(path)!r} must be unique")
    return items
