"""``make run``: a short demonstration on the embedded model.

One prompt, variants from different seeds side by side under three decodings
(plain sampling, 1/f-fluctuating temperature, colored-Gumbel draw), a small
temperature trace, a short search over paths scored by keyword coverage, and the same
search on arithmetic with a calculator the model may call (an island).
"""

from __future__ import annotations

import shutil
import textwrap
import time

from sazanami import models
from sazanami.engine.loop import Engine
from sazanami.sampling.params import SamplingParams

PROMPT = "Write a two-line poem about the sea at night."
BARS = " ▁▂▃▄▅▆▇█"


def side_by_side(columns: list[tuple[str, str]], width: int) -> str:
    """Lay out (title, text) columns next to each other."""
    col = max(20, (width - 3 * (len(columns) - 1)) // len(columns))
    wrapped = [
        [t[:col]] + ["─" * min(col, len(t))] + textwrap.wrap(x.strip().replace("\n", " / "), col) for t, x in columns
    ]
    height = max(len(w) for w in wrapped)
    return "\n".join(" │ ".join((w[i] if i < len(w) else "").ljust(col) for w in wrapped) for i in range(height))


def sparkline(values: list[float], low: float, high: float) -> str:
    span = max(high - low, 1e-9)
    return "".join(BARS[min(len(BARS) - 1, max(0, int((v - low) / span * (len(BARS) - 1) + 0.5)))] for v in values)


def main() -> None:
    width = min(shutil.get_terminal_size((120, 20)).columns, 140)
    t = time.perf_counter()
    engine = Engine(models.load())
    print(
        f"model {models.DEFAULT_MODEL} on the {engine.backend.label} backend, loaded in {time.perf_counter() - t:.1f} s"
    )
    print(f"prompt: {PROMPT}\n")
    base = SamplingParams(n=3, seed=2026, max_tokens=40, temperature=0.8, trace=True)
    for fluctuation in ("none", "pink-temperature", "pink-draw"):
        t = time.perf_counter()
        out = engine.generate(PROMPT, base.replace(fluctuation=fluctuation))
        dt = time.perf_counter() - t
        tokens = sum(c.completion_tokens for c in out)
        print(f"━━ fluctuation: {fluctuation}  ({tokens} tokens, {tokens / dt:.0f} tok/s aggregate)")
        print(side_by_side([(f"variant {c.index} (seed …{c.seed % 10000:04d})", c.text) for c in out], width))
        if fluctuation == "pink-temperature":
            temps = [s["temperature"] for s in out[0].trace]
            print(
                f"\n   temperature trace of variant 0 ({min(temps):.2f}–{max(temps):.2f}): {sparkline(temps, min(temps), max(temps))}"
            )
        print()
    search_demo(engine)


SEARCH_PROMPT = "Write one sentence that uses the words: lantern, river, whisper."


def search_demo(engine: Engine) -> None:
    """A short search: variants scored by keyword coverage, the best prefixes regrown."""
    from sazanami.search import search

    print(f"━━ search: {SEARCH_PROMPT}")
    t = time.perf_counter()
    tree = search(
        engine,
        SEARCH_PROMPT,
        "noise_search",
        mode="paths",
        scorer="contains:lantern,river,whisper",
        budget=400,
        seed=7,
        params=SamplingParams(max_tokens=40, temperature=0.8),
    )
    print(tree.render())
    print(f"\nwinner ({time.perf_counter() - t:.0f} s): {tree.text.strip()}")
    print()
    islands_demo(engine)


# Worked examples show the call; the prompt ends with "A:" (after "A: " the model never writes " CALC").
ARITHMETIC = (
    "Q: Calculate 12 * 7 + 5.\nA: CALC(12 * 7 + 5) => 89\nSo the answer is 89.\n"
    "Q: Calculate 31 * 24.\nA: CALC(31 * 24) => 744\nSo the answer is 744.\n"
    "Q: Calculate 61 * 73.\nA:"
)


def islands_demo(engine: Engine) -> None:
    """Search with a tool: each branch may call CALC; its result is injected and the model goes on."""
    from sazanami.islands import Islands, builtin_tools, marked_text
    from sazanami.search import search

    print("━━ search with a calculator (islands): Calculate 61 * 73.")
    t = time.perf_counter()
    tree = search(
        engine, ARITHMETIC, "noise_search", mode="paths", scorer="contains:4453", budget=128, seed=1, raw=True,
        params=SamplingParams(max_tokens=32, temperature=0.7, stop=["\nQ:", "\nA:"]),
        islands=Islands(tools=builtin_tools(["calc"]), describe_tools=False),
    )  # fmt: skip
    best = tree.best_node
    text = marked_text(tree.text, best.spans if best is not None else [])
    calls = sum(bool(n.spans) for n in tree.candidates())
    print(f"{calls} of {len(tree) - 1} candidates called CALC; ⟦…⟧ was injected, not generated")
    print(f"winner ({time.perf_counter() - t:.0f} s, score {best.score if best else None}): {text.strip()}")


if __name__ == "__main__":
    main()
