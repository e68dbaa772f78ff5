"""``make run``: a short demonstration on the embedded model."""

from __future__ import annotations

import shutil
import textwrap
import time

from sazanami import models
from sazanami.engine import Engine
from sazanami.params import SamplingParams

PROMPT = "Write a two-line poem about the sea at night."


def side_by_side(columns: list[tuple[str, str]], width: int) -> str:
    """Lay out (title, text) columns next to each other."""
    col = max(20, (width - 3 * (len(columns) - 1)) // len(columns))
    wrapped = [[t[:col]] + ["─" * min(col, len(t))] + textwrap.wrap(x.strip().replace("\n", " / "), col) for t, x in columns]
    height = max(len(w) for w in wrapped)
    lines = []
    for i in range(height):
        lines.append(" │ ".join((w[i] if i < len(w) else "").ljust(col) for w in wrapped))
    return "\n".join(lines)


def main() -> None:
    width = min(shutil.get_terminal_size((120, 20)).columns, 140)
    t = time.perf_counter()
    engine = Engine(models.load())
    print(f"model {models.DEFAULT_MODEL} loaded in {time.perf_counter() - t:.1f} s ({engine.backend.dtype})\n")
    print(f"prompt: {PROMPT}\n")
    params = SamplingParams(n=3, seed=2026, max_tokens=48, temperature=0.8)
    t = time.perf_counter()
    out = engine.generate(PROMPT, params)
    dt = time.perf_counter() - t
    tokens = sum(c.completion_tokens for c in out)
    print(side_by_side([(f"seed {c.seed % 10000:04d}…", c.text) for c in out], width))
    print(f"\n3 variants, {tokens} tokens in {dt:.1f} s ({tokens / dt:.0f} tok/s aggregate)")


if __name__ == "__main__":
    main()
