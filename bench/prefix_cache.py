"""What the prefix cache saves: wall time and prompt tokens computed, cache on vs off, one run.

    python bench/prefix_cache.py --threads 1                         # 4 concept tasks, 16x, 4 strategies
    python bench/prefix_cache.py --tasks 8 --multiples 8,16 --threads 1
    python bench/prefix_cache.py --backend llamacpp --threads 1      # the same on llama.cpp

For each task, strategy and budget the same search runs twice on the embedded model — on an
engine without a prefix cache and on one with a fresh cache — alternating which goes first,
so drift of the machine hits both. Printed per (strategy, budget): mean wall time of each,
their ratio, prompt tokens computed (prefilled) of each and their ratio, the share of prompt
positions the cache served, and how many nodes' tokens differ between the two runs (the
cache must not change outputs; float round-off of keys/values computed in other shapes
could, rarely). The last line compares ``paths`` with the cache against ``best_of_n`` at
the same budget, the gap the cache is meant to close.

Tasks: ``../shared/bench/concepts_dev.jsonl`` (a development set; say so when quoting).
Budgets are multiples of ``--unit`` tokens (one sample's length; default 24 = max_tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sazanami import Engine, SamplingParams, load  # noqa: E402
from sazanami.models import BACKENDS  # noqa: E402
from sazanami.prefix_cache import PrefixCache  # noqa: E402
from sazanami.search import search  # noqa: E402

CONCEPTS = Path(os.environ.get("SAZANAMI_CONCEPTS", ROOT.parent / "shared" / "bench" / "concepts_dev.jsonl"))

STRATEGIES = {
    "best_of_n": ("best_of_n", {}),
    "paths": ("noise_search", {"mode": "paths", "rounds": 4}),
    "tree": ("tree", {"chunk": 8, "branch": 3, "width": 4, "expand": 2}),
    "anneal": ("anneal", {"rounds": 3}),
    "beam": ("beam", {}),
    "synthesize": ("synthesize", {"base": "best_of_n", "k": 3}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=4, help="Concept tasks (from the dev set).")
    ap.add_argument("--strategies", default="best_of_n,paths,tree,anneal")
    ap.add_argument("--multiples", default="16", help="Budgets as multiples of --unit.")
    ap.add_argument("--unit", type=int, default=24, help="Tokens of one sample (max_tokens).")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument(
        "--backend", default="torch", choices=[b for b in BACKENDS if b != "auto"],
        help="Engine the searches run on (llamacpp: its holder-sequence cache; --threads are llama.cpp's).",
    )  # fmt: skip
    ap.add_argument("--json", dest="out", default=None, help="Write the rows to this JSON file.")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    tasks = [json.loads(line) for line in CONCEPTS.read_text().splitlines() if line.strip()][: args.tasks]
    backend = load(args.model, backend=args.backend, threads=args.threads if args.backend == "llamacpp" else None)
    off = Engine(backend, prefix_cache=False)
    params = SamplingParams(max_tokens=args.unit, temperature=0.7)
    rows = []
    print(f"{len(tasks)} tasks from {CONCEPTS.name}; model {args.model} on {args.backend}; unit {args.unit} tokens")
    for name in args.strategies.split(","):
        strategy, options = STRATEGIES[name]
        for mult in [int(m) for m in args.multiples.split(",")]:
            budget = mult * args.unit
            for i, task in enumerate(tasks):
                scorer = "contains:" + ",".join(task["concepts"])
                on = Engine(backend, prefix_cache=PrefixCache())  # fresh: no help from earlier tasks
                kw = dict(scorer=scorer, budget=budget, params=params, seed=args.seed + i, **options)
                runs = {}
                for which in (("off", "on") if i % 2 == 0 else ("on", "off")):
                    engine = off if which == "off" else on
                    t = time.perf_counter()
                    tree = search(engine, task["prompt"], strategy, **kw)
                    runs[which] = (tree, time.perf_counter() - t)
                (a, ta), (b, tb) = runs["off"], runs["on"]
                diff = sum(x.token_ids != y.token_ids for x, y in zip(a.nodes, b.nodes)) + abs(len(a.nodes) - len(b.nodes))
                rows.append({
                    "strategy": name, "multiple": mult, "task": task["id"],
                    "wall_off": ta, "wall_on": tb,
                    "prompt_off": a.spend["prompt_tokens"], "prompt_on": b.spend["prompt_tokens"],
                    "reused_on": b.spend["prompt_tokens_reused"], "generated": b.spend["generated_tokens"],
                    "nodes": len(a.nodes), "nodes_differing": diff,
                })  # fmt: skip
    header = (
        f"{'strategy':<11}{'budget':>7}{'wall off':>10}{'wall on':>9}{'ratio':>7}"
        f"{'prompt off':>12}{'prompt on':>11}{'cut':>7}{'served':>8}{'diff':>6}"
    )
    print(header)
    summary = {}
    for name in args.strategies.split(","):
        for mult in [int(m) for m in args.multiples.split(",")]:
            sel = [r for r in rows if r["strategy"] == name and r["multiple"] == mult]
            if not sel:
                continue
            m = {k: statistics.mean(r[k] for r in sel) for k in ("wall_off", "wall_on", "prompt_off", "prompt_on", "reused_on")}
            served = m["reused_on"] / max(1, m["reused_on"] + m["prompt_on"])
            diff = sum(r["nodes_differing"] for r in sel)
            summary[(name, mult)] = m
            print(
                f"{name:<11}{str(mult) + 'x':>7}{m['wall_off']:>9.2f}s{m['wall_on']:>8.2f}s"
                f"{m['wall_on'] / m['wall_off']:>7.2f}{m['prompt_off']:>12.0f}{m['prompt_on']:>11.0f}"
                f"{m['prompt_off'] / max(1, m['prompt_on']):>6.1f}x{served:>8.0%}{diff:>6}"
            )
    for mult in [int(m) for m in args.multiples.split(",")]:
        p, b = summary.get(("paths", mult)), summary.get(("best_of_n", mult))
        if p and b:
            print(
                f"paths / best_of_n wall time at {mult}x: {p['wall_off'] / b['wall_off']:.2f} without the cache, "
                f"{p['wall_on'] / b['wall_on']:.2f} with it"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
