"""One engine on all cores vs Ray replicas of one core each, side by side.

    python bench/replicas.py [--replicas 2] [--backend torch] [--rounds 3] [--tokens 48]

On the embedded model, interleaved rounds of: aggregate tokens/s of one 16-row generation,
and the wall time of one search (best-of-n and paths at 16 × 24 tokens) — on one engine of
``--replicas`` threads, and on ``RayEngines`` with ``--replicas`` actors of one thread each
(local Ray, started once, its start-up not counted). Prints the medians and the ratio
replicas / one engine. The searches are also checked to build the same tree on both (same seed).
Every search starts from empty prefix caches.

Prefix affinity: the paths search runs on the replicas twice more, with affinity (a
continuation goes to the replica that computed its parent) and without (rows balanced only),
and prints wall time and the share of prompt tokens the replicas' caches served.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from sazanami import SamplingParams
from sazanami.engine.engine_spec import EngineSpec
from sazanami.engine.replicas import PrefixOwners, RayEngines
from sazanami.search import search

PROMPT = "Write a story about a lighthouse keeper."
TASK = "Write one sentence that uses all of these words: farmer, tractor, rain, barn, mud."
WORDS = ("farmer", "tractor", "rain", "barn", "mud")
PATHS = {"mode": "paths", "rounds": 4}


def coverage(text: str) -> float:
    low = text.lower()
    return sum(w in low for w in WORDS) / len(WORDS)


def generation(engine: Any, tokens: int) -> float:
    p = SamplingParams(n=16, seed=1, max_tokens=tokens, ignore_eos=True)
    t = time.perf_counter()
    out = engine.generate(PROMPT, p)
    return sum(c.completion_tokens for c in out) / (time.perf_counter() - t)


def run_search(engine: Any, strategy: str, options: dict[str, Any]) -> tuple[float, Any]:
    engine.clear_prefix_cache()
    t = time.perf_counter()
    tree = search(
        engine, TASK, strategy, scorer=coverage, budget=16 * 24, seed=3,
        params=SamplingParams(max_tokens=24, temperature=0.7), **options,
    )  # fmt: skip
    return time.perf_counter() - t, tree


def searching(engine: Any, strategy: str, options: dict[str, Any]) -> tuple[float, list[str]]:
    seconds, tree = run_search(engine, strategy, options)
    return seconds, [n.text for n in tree.nodes]


def affinity(engine: RayEngines, on: bool) -> tuple[float, float, list[str]]:
    """Paths on the replicas with or without prefix affinity: seconds, cache share, texts."""
    engine.owners = PrefixOwners() if on else None
    seconds, tree = run_search(engine, "noise_search", PATHS)
    spend = tree.spend
    reused = spend.get("prompt_tokens_reused", 0)
    share = reused / max(1, reused + spend.get("prompt_tokens", 0))
    return seconds, share, [n.text for n in tree.nodes]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--replicas", type=int, default=2, help="actors (1 thread each); the single engine gets as many threads"
    )
    ap.add_argument("--backend", default="torch", choices=("torch", "llamacpp"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=48, help="tokens per row of the 16-row generation")
    args = ap.parse_args()
    if not 1 <= args.replicas <= 64:
        ap.error(f"--replicas must be in [1, 64], got {args.replicas}")
    if not 1 <= args.rounds <= 50:
        ap.error(f"--rounds must be in [1, 50], got {args.rounds}")
    one = EngineSpec("smollm2-135m", args.backend, threads=args.replicas).open()
    many = RayEngines(EngineSpec("smollm2-135m", args.backend, threads=1), replicas=args.replicas)
    engines = {f"1 × {args.replicas} threads": one, f"{args.replicas} × 1 thread (Ray)": many}
    jobs: dict[str, Any] = {
        "generate n=16 (tok/s)": lambda e: (generation(e, args.tokens), None),
        "best_of_n 16× (s)": lambda e: searching(e, "best_of_n", {}),
        "paths 16× (s)": lambda e: searching(e, "noise_search", PATHS),
    }
    for e in engines.values():  # warm-up: model load, Ray actors, first prefill
        generation(e, 4)
    got: dict[tuple[str, str], list[float]] = {}
    trees: dict[tuple[str, str], Any] = {}
    aff: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    aff_texts: dict[bool, list[str]] = {}
    for r in range(args.rounds):
        for on in (True, False) if r % 2 == 0 else (False, True):
            seconds, share, texts = affinity(many, on)
            aff[on].append((seconds, share))
            aff_texts[on] = texts
        for job, fn in jobs.items():
            order = list(engines.items()) if r % 2 == 0 else list(reversed(engines.items()))
            for name, e in order:
                value, tree = fn(e)
                got.setdefault((job, name), []).append(value)
                trees[(job, name)] = tree
    names = list(engines)
    print(f"embedded model, {args.backend} backend, {args.rounds} rounds (medians)\n")
    print(f"{'':24} {names[0]:>18} {names[1]:>22} {'ratio':>7}  same tree")
    for job in jobs:
        a, b = (statistics.median(got[(job, n)]) for n in names)
        same = "—" if trees[(job, names[0])] is None else str(trees[(job, names[0])] == trees[(job, names[1])])
        print(f"{job:24} {a:18.2f} {b:22.2f} {b / a:7.2f}  {same}")
    print(f"\nprefix affinity on {args.replicas} replicas, paths 16× (cold caches, medians)")
    print(f"{'':24} {'wall s':>10} {'prompt tokens from cache':>26}")
    for on in (True, False):
        wall = statistics.median(x[0] for x in aff[on])
        share = statistics.median(x[1] for x in aff[on])
        print(f"{'affinity ' + ('on' if on else 'off'):24} {wall:10.2f} {share:25.0%}")
    on_wall, off_wall = (statistics.median(x[0] for x in aff[v]) for v in (True, False))
    print(f"{'ratio on / off':24} {on_wall / off_wall:10.2f}   same tree {aff_texts[True] == aff_texts[False]}")


if __name__ == "__main__":
    main()
