"""Per-token cost of islands on the embedded model, side by side in one run.

    python bench/islands_overhead.py [--tokens 48] [--reps 5] [--threads 1] [--quick]

For batch 1 and 16, each run times the decode steps only (from the first streamed step
to the last; the prefill is left out) of:
- ``base``: no islands;
- ``idle watcher``: the CALC tool registered, the model never calling it (target ≤ 2 %);
- ``grammar: any text``: a regex that admits any text (every token checked);
- ``grammar: words``: a regex of words and punctuation (most tokens masked) (target ≤ 10 % at 16).
Neither grammar can end before the last step (they end with a NUL character the model does
not write), so every run decodes the same number of steps. Configurations are interleaved
in a fresh random order per repetition. Reported per configuration: the median and the 10th
percentile of the per-step decode times (the latter is the least disturbed on a shared
machine), and the time spent inside the island hooks per step as a share of a base step —
the overhead measured directly, which holds up even when the machine is busy.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

import torch

from sazanami import models
from sazanami.engine.loop import Completion, Engine
from sazanami.islands import Constraint, Islands, builtin_tools
from sazanami.islands.constraints import ll_tokenizer
from sazanami.islands.runtime import IslandBatch
from sazanami.sampling.params import SamplingParams

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."
CONFIGS = {
    "base": None,
    "idle watcher": Islands(tools=builtin_tools(["calc"]), describe_tools=False),
    "grammar: any text": Islands(constraint=Constraint.regex(r"[^\x00]*\x00")),
    "grammar: words": Islands(constraint=Constraint.regex(r"([A-Za-z']+[,.;:!?]? |\n)*\x00")),
}


class HookTimer:
    """Seconds spent inside the engine's island hooks (mask, guard, observe, inject) during real runs."""

    NAMES = ("mask", "guard", "observe", "inject")

    def __init__(self) -> None:
        self.total = 0.0
        self.originals = {name: getattr(IslandBatch, name) for name in self.NAMES}
        for name, fn in self.originals.items():
            setattr(IslandBatch, name, self._timed(fn))

    def _timed(self, fn: Any) -> Any:
        def wrapper(*args: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                self.total += time.perf_counter() - t

        return wrapper


def step_times(
    engine: Engine, n: int, tokens: int, islands: Islands | None, timer: HookTimer
) -> tuple[list[float], float]:
    """Per-step decode durations (prefill excluded) of ``n`` rows, and the seconds spent in island hooks."""
    params = SamplingParams(n=n, seed=1, max_tokens=tokens, ignore_eos=True, temperature=0.7)
    out: list[Completion] = []
    steps = engine.steps(engine.rows_for([PROMPT], params, islands=islands), out)
    next(steps)  # prefill + first draw
    timer.total = 0.0
    times = []
    t = time.perf_counter()
    for _ in steps:
        now = time.perf_counter()
        times.append(now - t)
        t = now
    assert all(c.completion_tokens == tokens for c in out), [c.finish_reason for c in out]
    return times, timer.total


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=48, help="decode steps per run")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of each configuration")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--quick", action="store_true", help="24 steps, 3 repetitions")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default); 1 is steadier on a busy CPU")
    args = ap.parse_args()
    tokens, reps = (24, 3) if args.quick else (args.tokens, args.reps)
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    engine = Engine(models.load())
    ll_tokenizer(engine.tokenizer, engine.backend.vocab_size)  # built once per process (~0.3 s), not per run
    timer = HookTimer()
    dtype = str(engine.backend.dtype).replace("torch.", "")
    print(f"embedded model ({dtype}), {torch.get_num_threads()} threads; {tokens} decode steps per run, {reps} reps")
    print("step times pooled over reps: median and 10th percentile (the least disturbed steps);")
    print("hooks = time inside the island hooks per step, as a share of the base median step\n")
    rng = random.Random(0)
    head = f"{'batch':>5}  {'configuration':18} {'ms/step med':>11} {'ms/step p10':>11}"
    print(head + f" {'ratio med':>9} {'ratio p10':>9} {'hooks ms':>8} {'hooks %':>7}")
    for n in (int(b) for b in args.batches.split(",")):
        for isl in CONFIGS.values():  # warm-up
            step_times(engine, n, 4, isl, timer)
        times: dict[str, list[float]] = {name: [] for name in CONFIGS}
        hooks: dict[str, float] = dict.fromkeys(CONFIGS, 0.0)
        for _ in range(reps):
            order = list(CONFIGS)
            rng.shuffle(order)
            for name in order:
                ts, h = step_times(engine, n, tokens, CONFIGS[name], timer)
                times[name] += ts
                hooks[name] += h
        base_med, base_p10 = statistics.median(times["base"]), quantile(times["base"], 0.1)
        for name, ts in times.items():
            med, p10 = statistics.median(ts), quantile(ts, 0.1)
            hook = hooks[name] / len(ts)
            print(
                f"{n:5d}  {name:18} {med * 1e3:11.2f} {p10 * 1e3:11.2f} {med / base_med:9.3f} {p10 / base_p10:9.3f}"
                f" {hook * 1e3:8.3f} {hook / base_med:7.2%}"
            )
        print()


if __name__ == "__main__":
    main()
