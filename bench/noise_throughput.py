"""Throughput of the colored-noise sources in :mod:`sazanami.noise.colored`.

    .venv/bin/python bench/noise_throughput.py [--threads N] [--quick]

Prints, for the streaming source (one ``step()`` per generated token) at 16, 4096,
49,152 (one row's vocabulary) and 786,432 (16 rows × 49,152) streams and β ∈ {0, 1, 2}:
ms per step and samples/s, the best of a few repeats after a warm-up; then the parts of a
step at 786,432 streams (normals alone, ``torch.randn`` of the same size for scale, the
AR recursion alone) and the FFT block generator. Timings on a shared machine vary:
compare numbers from one run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from sazanami.noise.colored import ColoredNoise, _box_muller, colored_noise_block


def best_of(fn: Callable[[], object], repeats: int, inner: int) -> float:
    """Best mean seconds per call of ``fn`` over ``repeats`` runs of ``inner`` calls."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return best


def row(label: str, seconds: float, samples: int) -> None:
    print(f"  {label:<46} {seconds * 1e3:10.4f} ms   {samples / seconds / 1e6:9.1f} M samples/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else 5
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    print("streaming source, per step():")
    for streams in (16, 4096, 49_152, 786_432):
        inner = max(4, min(256, 2**21 // streams))
        for beta in (0.0, 1.0, 2.0):
            src = ColoredNoise(beta, streams, seed=1)
            t = best_of(src.step, repeats, inner)
            row(f"streams={streams:>7} beta={beta:g} (K={src.components})", t, streams)

    print("parts of a step at 786,432 streams:")
    n = 786_432
    keys = torch.arange(n, dtype=torch.int64)
    pair = torch.empty(2, n)
    scratch: list[torch.Tensor] = []
    normals = best_of(lambda: _box_muller(keys, 0, 1, pair, scratch), repeats, 8) / 2
    row("normals: counter hash + Box-Muller", normals, n)
    row("torch.randn(786432), for scale", best_of(lambda: torch.randn(n), repeats, 8), n)
    src = ColoredNoise(1.0, n, seed=1)
    e, y = torch.randn(n), torch.empty(n)
    row(f"beta=1 AR recursion alone (K={src.components})", best_of(lambda: src._recurrence(e, y), repeats, 8), n)
    t0 = time.perf_counter()
    src.restore(src.snapshot())
    print(f"  snapshot + restore: {(time.perf_counter() - t0) * 1e3:.1f} ms")

    print("FFT block generator (Timmer & König), whole block:")
    for steps, streams in ((4096, 64), (4096, 1024), (1024, 4096)):
        for beta in (0.0, 1.0, 2.0):
            t = best_of(lambda b=beta, s=steps, m=streams: colored_noise_block(b, s, m, seed=1), repeats, 1)
            row(f"steps={steps} streams={streams} beta={beta:g}", t, steps * streams)


if __name__ == "__main__":
    main()
