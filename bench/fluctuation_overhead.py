"""Per-token cost of each fluctuation vs plain sampling, in the same engine.

    python bench/fluctuation_overhead.py [--steps 48] [--repeats 3]

For batch 1 and 16 on the embedded model: ms per decoding step with no
fluctuation and with each preset (interleaved, best of ``--repeats``), the
overhead in percent; then the noise generator's throughput at 786,432 streams
(49,152-token vocabulary × 16 rows). Targets: logits-level fluctuations ≤ 3 %
at batch 16, hidden / embedding ≤ 5 %.
"""

from __future__ import annotations

import argparse
import time

import torch

from sazanami import models
from sazanami.engine import Engine
from sazanami.fluctuation import PRESETS
from sazanami.noise import ColoredNoise
from sazanami.params import SamplingParams

PROMPT = "Describe a walk through a forest in autumn."


def ms_per_step(engine: Engine, n: int, fluctuation: str, tokens: int) -> float:
    p = SamplingParams(n=n, seed=1, max_tokens=tokens, ignore_eos=True, temperature=0.8, fluctuation=fluctuation)
    t = time.perf_counter()
    engine.generate(PROMPT, p)
    return (time.perf_counter() - t) / tokens * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", "--tokens", dest="tokens", type=int, default=48, help="decoding steps per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 is steadier on a shared 2-core box)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    engine = Engine(models.load())
    names = list(PRESETS)
    print(
        f"embedded model ({engine.backend.dtype}), {torch.get_num_threads()} torch threads, "
        f"{args.tokens} tokens per run, best of {args.repeats}\n"
    )
    for n in (1, 16):
        ms_per_step(engine, n, "none", 4)  # warm-up
        best = {name: float("inf") for name in names}
        for _ in range(args.repeats):
            for name in names:  # interleaved so drift hits every setting alike
                best[name] = min(best[name], ms_per_step(engine, n, name, args.tokens))
        base = best["none"]
        print(f"batch {n}: {'fluctuation':20} {'ms/step':>8} {'overhead':>9}")
        for name in names:
            print(f"         {name:20} {best[name]:8.1f} {100 * (best[name] / base - 1):+8.1f}%")
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
