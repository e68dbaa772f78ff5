"""What the prefix cache saves: wall time, engine calls and prompt tokens, cache on vs off, one run.

    python bench/prefix_cache.py --threads 1                         # 4 concept tasks, 16x, 4 strategies
    python bench/prefix_cache.py --tasks 8 --multiples 8,16 --threads 1
    python bench/prefix_cache.py --backend llamacpp --threads 1      # the same on llama.cpp

For each task, strategy and budget the same search runs twice on the embedded model — on an
engine without a prefix cache and on one with a fresh cache — alternating which goes first,
so drift of the machine hits both. Printed per (strategy, budget), per task means, cache off
then on: engine calls, mean rows per call, forward passes (decode steps and prefills: on a
CPU a search's time follows them), prompt tokens computed (prefilled) and reused (served by
the cache), wall time; then the wall and prompt ratios and how many nodes' tokens differ
between the two runs (the cache must not change outputs; float round-off of keys/values
computed in other shapes could, rarely). The last lines compare ``paths`` with
``best_of_n`` at the same budget (wall time, cache off and on), issue 19's target (≤ 1.3).

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
from sazanami.search import search  # noqa: E402


class CountingEngine(Engine):
    """An engine that counts its calls and their rows (each :meth:`steps` is one engine call)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[int] = []

    def steps(self, requests, out, deltas=True):  # type: ignore[no-untyped-def]
        self.calls.append(len(requests))
        return super().steps(requests, out, deltas)


def count_forwards(backend) -> list[int]:  # type: ignore[no-untyped-def]
    """Count the backend's forward passes from now on (the list's one entry)."""
    forward, count = backend.forward, [0]

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        count[0] += 1
        return forward(*args, **kwargs)

    backend.forward = counted
    return count


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
    forwards = count_forwards(backend)
    off = CountingEngine(backend, prefix_cache=False)
    params = SamplingParams(max_tokens=args.unit, temperature=0.7)
    rows = []
    print(f"{len(tasks)} tasks from {CONCEPTS.name}; model {args.model} on {args.backend}; unit {args.unit} tokens")
    for name in args.strategies.split(","):
        strategy, options = STRATEGIES[name]
        for mult in [int(m) for m in args.multiples.split(",")]:
            budget = mult * args.unit
            for i, task in enumerate(tasks):
                scorer = "contains:" + ",".join(task["concepts"])
                on = CountingEngine(backend)  # a fresh cache (the backend's block size): no help from earlier tasks
                kw = dict(scorer=scorer, budget=budget, params=params, seed=args.seed + i, **options)
                runs = {}
                for which in ("off", "on") if i % 2 == 0 else ("on", "off"):
                    engine = off if which == "off" else on
                    engine.calls, forwards[0] = [], 0
                    t = time.perf_counter()
                    tree = search(engine, task["prompt"], strategy, **kw)
                    runs[which] = (tree, time.perf_counter() - t, list(engine.calls), forwards[0])
                (a, ta, ca, fa), (b, tb, cb, fb) = runs["off"], runs["on"]
                diff = sum(x.token_ids != y.token_ids for x, y in zip(a.nodes, b.nodes)) + abs(
                    len(a.nodes) - len(b.nodes)
                )
                rows.append({
                    "strategy": name, "multiple": mult, "task": task["id"],
                    "wall_off": ta, "wall_on": tb,
                    "calls_off": len(ca), "calls_on": len(cb), "rows_off": sum(ca), "rows_on": sum(cb),
                    "forwards_off": fa, "forwards_on": fb, "reused_off": a.spend["prompt_tokens_reused"],
                    "prompt_off": a.spend["prompt_tokens"], "prompt_on": b.spend["prompt_tokens"],
                    "reused_on": b.spend["prompt_tokens_reused"], "generated": b.spend["generated_tokens"],
                    "nodes": len(a.nodes), "nodes_differing": diff,
                })  # fmt: skip
    header = (
        f"{'strategy':<11}{'budget':>7}{'cache':>6}{'calls':>7}{'rows/call':>10}{'forwards':>10}"
        f"{'prompt':>8}{'reused':>8}{'wall':>9}"
    )
    print(header)
    summary = {}
    keys = ("wall", "calls", "rows", "forwards", "prompt", "reused")
    for name in args.strategies.split(","):
        for mult in [int(m) for m in args.multiples.split(",")]:
            sel = [r for r in rows if r["strategy"] == name and r["multiple"] == mult]
            if not sel:
                continue
            m = {f"{k}_{w}": statistics.mean(r[f"{k}_{w}"] for r in sel) for k in keys for w in ("off", "on")}
            summary[(name, mult)] = m
            for w in ("off", "on"):
                print(
                    f"{name if w == 'off' else '':<11}{str(mult) + 'x' if w == 'off' else '':>7}{w:>6}"
                    f"{m['calls_' + w]:>7.1f}{m['rows_' + w] / max(1e-9, m['calls_' + w]):>10.2f}"
                    f"{m['forwards_' + w]:>10.1f}{m['prompt_' + w]:>8.0f}{m['reused_' + w]:>8.0f}{m['wall_' + w]:>8.2f}s"
                )
            diff = sum(r["nodes_differing"] for r in sel)
            served = m["reused_on"] / max(1, m["reused_on"] + m["prompt_on"])
            print(
                f"{'':<24}on/off: wall {m['wall_on'] / m['wall_off']:.2f}, prompt tokens computed "
                f"{m['prompt_off'] / max(1, m['prompt_on']):.1f}x fewer, {served:.0%} served by the cache, "
                f"{diff} nodes differing"
            )
    for mult in [int(m) for m in args.multiples.split(",")]:
        p, b = summary.get(("paths", mult)), summary.get(("best_of_n", mult))
        if p and b:
            print(
                f"paths / best_of_n wall time at {mult}x: {p['wall_off'] / b['wall_off']:.2f} without the cache, "
                f"{p['wall_on'] / b['wall_on']:.2f} with it (target <= 1.3); engine calls "
                f"{p['calls_on'] / b['calls_on']:.2f}x, forward passes {p['forwards_on'] / b['forwards_on']:.2f}x"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
