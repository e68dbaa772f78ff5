"""Per-token cost of each fluctuation vs plain sampling, in the same engine.

    python bench/fluctuation_overhead.py [--steps 24] [--pairs 5] [--threads N]
        [--models smollm2-135m,gemma3-270m,qwen2.5-coder-0.5b] [--backend torch|llamacpp]
        [--ns 1,16] [--names per-token|NAME,…] [--out FILE.jsonl]

For each batch size (default 1 and 16) and model (default the embedded one, on torch), two
measures side by side in one run:

- *paired*: ``--pairs`` back-to-back pairs of runs (plain, fluctuation; order alternating), the
  median of each pair's time ratio − 1, with its range. Adjacent runs share the machine's
  state, so drift cancels; the range shows what is left of the noise.
- *direct*: the time spent inside the fluctuation's own code per step (the sampler's noise,
  temperature and draw steps and the hidden-state hook, timed around each call), as a share of
  the plain step. It does not move with the machine's drift, so it is the figure to hold
  against the targets; the paired figure checks it.

Then the noise generator's throughput at 786,432 streams (49,152-token vocabulary × 16 rows).
Targets: logits-level fluctuations ≤ 3 % (issue 28: the per-token entries, pink-logits and
pink-draw, ≥ 0.97× plain on SmolLM2, Gemma 3 and Qwen2.5-Coder, llama.cpp and torch), hidden /
embedding ≤ 5 %.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import torch

from sazanami import models
from sazanami.engine.loop import Engine
from sazanami.errors import ParameterError
from sazanami.noise.colored import ColoredNoise
from sazanami.noise.fluctuation import PRESETS, FluctuationBatch
from sazanami.sampling.params import SamplingParams

PROMPT = "Describe a walk through a forest in autumn."
EXTRA = {"pink-draw-quantile": {"draw": {"mode": "quantile", "beta": 1.0}}}  # one stream per row
TARGETS = {"pink-hidden": 5.0, "pink-embedding": 5.0}  # everything else: 3 % (logits level)


@contextmanager
def fluctuation_clock() -> Iterator[list[float]]:
    """Seconds spent inside FluctuationBatch's per-step methods and hooks, accumulated in [0]."""
    spent = [0.0]
    names = ("perturb_logits", "temperature", "draw")
    saved = {name: getattr(FluctuationBatch, name) for name in names} | {"hidden_hook": FluctuationBatch.hidden_hook}

    def timed(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - t

        return wrapper

    def hidden_hook(self: FluctuationBatch, *args: Any, **kwargs: Any) -> Any:
        hook = saved["hidden_hook"](self, *args, **kwargs)
        return None if hook is None else timed(hook)

    try:
        for name in names:
            setattr(FluctuationBatch, name, timed(saved[name]))
        FluctuationBatch.hidden_hook = hidden_hook  # type: ignore[method-assign]
        yield spent
    finally:
        for name, fn in saved.items():
            setattr(FluctuationBatch, name, fn)


def run(engine: Engine, n: int, fluctuation: str | dict, tokens: int) -> tuple[float, float]:
    """(ms per step, ms per step inside the fluctuation's code) for one generation."""
    p = SamplingParams(n=n, seed=1, max_tokens=tokens, ignore_eos=True, temperature=0.8, fluctuation=fluctuation)
    with fluctuation_clock() as spent:
        t = time.perf_counter()
        engine.generate(PROMPT, p)
        wall = time.perf_counter() - t
    return wall / tokens * 1e3, spent[0] / tokens * 1e3


PER_TOKEN = ("pink-logits", "pink-draw")
"""Entries that step one colored stream per vocabulary entry per row (issue 28: ≥ 0.97× plain)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", "--tokens", dest="tokens", type=int, default=24, help="decoding steps per run")
    ap.add_argument("--pairs", type=int, default=5, help="paired runs per fluctuation")
    ap.add_argument("--threads", type=int, default=None, help="torch (and llama.cpp) threads; 1 is steadier on 2 cores")
    ap.add_argument("--models", default=models.DEFAULT_MODEL, help="registry names, comma-separated")
    ap.add_argument("--backend", default="torch", choices=("torch", "llamacpp"))
    ap.add_argument("--ns", default="1,16", help="batch sizes, comma-separated")
    ap.add_argument("--names", default=None, help="fluctuations to time (default: every preset; 'per-token': those)")
    ap.add_argument("--out", default=None, help="also append one JSON line per measurement here")
    args = ap.parse_args()
    if not 1 <= args.pairs <= 100:
        ap.error(f"--pairs must be in [1, 100], got {args.pairs}")
    if not 1 <= args.tokens <= 1024:
        ap.error(f"--steps must be in [1, 1024], got {args.tokens}")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    names = [name for name in PRESETS if name != "none"] + list(EXTRA)
    if args.names:  # "per-token" stands for those entries
        names = [x for name in args.names.split(",") for x in (PER_TOKEN if name == "per-token" else (name,))]
    ns = [int(x) for x in args.ns.split(",")]
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {models.cpu_model()}, {os.cpu_count()} cores")
    print("command: python bench/fluctuation_overhead.py " + " ".join(sys.argv[1:]))
    for model in args.models.split(","):
        backend = models.load(model, backend=args.backend, threads=args.threads)
        engine = Engine(backend, prefix_cache=False)  # every run prefills its prompt alike
        usable = [n for n in names if not (args.backend == "llamacpp" and n in ("pink-hidden",))]
        print(
            f"\n{model} on {args.backend}, vocabulary {backend.vocab_size}, {torch.get_num_threads()} torch threads, "
            f"{args.tokens} tokens per run, {args.pairs} pairs per fluctuation\n"
        )
        for n in ns:
            run(engine, n, "none", 4)  # warm-up
            print(
                f"batch {n}: {'fluctuation':20} {'plain ms':>9} {'paired':>8} {'[range]':>17} "
                f"{'direct ms':>10} {'direct':>7} {'target':>7}"
            )
            for name in usable:
                spec = EXTRA.get(name, name)
                ratios, plain, direct = [], [], []
                try:
                    run(engine, n, spec, 2)
                except ParameterError as e:  # what this backend cannot run (e.g. embedding noise on this arch)
                    print(f"         {name:20} skipped: {e}")
                    continue
                for i in range(args.pairs):
                    if i % 2 == 0:  # alternate which run goes first
                        base = run(engine, n, "none", args.tokens)
                        with_fl = run(engine, n, spec, args.tokens)
                    else:
                        with_fl = run(engine, n, spec, args.tokens)
                        base = run(engine, n, "none", args.tokens)
                    ratios.append(with_fl[0] / base[0] - 1)
                    plain.append(base[0])
                    direct.append(with_fl[1])
                med_plain, med_direct = statistics.median(plain), statistics.median(direct)
                target = TARGETS.get(name, 3.0)
                share = 100 * med_direct / med_plain
                print(
                    f"         {name:20} {med_plain:9.1f} {100 * statistics.median(ratios):+7.1f}% "
                    f"[{100 * min(ratios):+6.1f}, {100 * max(ratios):+6.1f}]% {med_direct:10.2f} {share:6.1f}% "
                    f"{'≤' if share <= target else '>'}{target:4.0f}%",
                    flush=True,
                )
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps({
                            "model": model, "backend": args.backend, "n": n, "fluctuation": name,
                            "plain_ms_per_step": med_plain, "paired_overhead": statistics.median(ratios),
                            "paired_range": [min(ratios), max(ratios)], "direct_ms_per_step": med_direct,
                            "direct_share": share / 100, "threads": args.threads, "tokens": args.tokens,
                            "date": datetime.now(UTC).isoformat(timespec="seconds"),
                        }) + "\n")  # fmt: skip
            print()
    for streams in (16, 49152, 786432):
        src = ColoredNoise(1.0, streams, seed=0)
        src.step()
        t = time.perf_counter()
        steps = 20
        for _ in range(steps):
            src.step()
        dt = (time.perf_counter() - t) / steps
        print(f"noise β=1, {streams:>7} streams: {dt * 1e3:7.3f} ms/step, {streams / dt / 1e6:8.1f} M samples/s")


if __name__ == "__main__":
    main()
