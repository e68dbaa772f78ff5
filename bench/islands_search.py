"""Grounded search: does a tool inside search beat search without it, at equal generated tokens?

    python bench/islands_search.py --threads 1              # 16 tasks × 2 seeds, 1×/4×/8× (~90 min)
    python bench/islands_search.py --quick --threads 1      # 4 tasks × 1 seed, ~5 min
    python bench/islands_search.py --tasks 12 --budgets 1,4 --threads 1 --docs   # the run in docs/guide/islands.md (~30 min)

Tasks: reasoning-gym ``basic_arithmetic`` (generated offline, fixed seed): half are one product
of two 2-digit numbers, half three 2-digit terms with + − ×. Solved = the last number of the
answer is the task's answer. The prompt holds three worked examples; the two arms differ only
in how the examples solve them:

- ``no tool``: ``12 * 7 + 5 = 89`` — the model must do the arithmetic itself;
- ``CALC``: ``CALC(12 * 7 + 5) => 89`` — the model may write a call; sazanami runs CALC and
  injects the result mid-generation (no grammar forces the call: the model decides).

Each arm runs ``best_of_n`` and ``noise_search`` over paths at 1×, 4× and 8× one sample's
tokens (32), scored by the task's verifier (an oracle) and by the model's own mean log-prob
(no oracle). Reported: solved rate (mean ± sd over seeds), the share of winners that made a
call, and tokens. SmolLM2-135M-Instruct, CPU; a development set, say so when quoting.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from sazanami.engine.loop import Engine
from sazanami.islands import Islands, builtin_tools
from sazanami.models import load
from sazanami.sampling.params import SamplingParams
from sazanami.search import search

OUT = Path(__file__).parent / "out"
DOCS = Path(__file__).parent.parent / "docs"
EXAMPLES = [("12 * 7 + 5", "89"), ("31 * 24", "744"), ("56 - 18 * 3", "2")]
SHOT = {  # the prompt ends with "A:" — a trailing space would make " CALC" an unlikely token split
    "no tool": "".join(f"Q: Calculate {q}.\nA: {q} = {a}\nSo the answer is {a}.\n" for q, a in EXAMPLES),
    "CALC": "".join(f"Q: Calculate {q}.\nA: CALC({q}) => {a}\nSo the answer is {a}.\n" for q, a in EXAMPLES),
}
STRATEGIES = {"best_of_n": ("best_of_n", {}), "paths": ("noise_search", {"mode": "paths"})}
MAX_TOKENS = 32


def tasks(n: int) -> list[dict[str, str]]:
    """``n`` arithmetic questions (half products, half three mixed terms) with their answers."""
    import reasoning_gym as rg

    common = {"min_digits": 2, "max_digits": 2, "allow_parentheses": False, "allow_negation": False}
    products = rg.create_dataset(
        "basic_arithmetic", size=n - n // 2, seed=7, min_terms=2, max_terms=2, operators=("*",), **common
    )
    mixed = rg.create_dataset(
        "basic_arithmetic", size=n // 2, seed=8, min_terms=3, max_terms=3, operators=("+", "-", "*"), **common
    )
    return [{"question": x["question"], "answer": str(x["answer"])} for ds in (products, mixed) for x in ds]


def solved(text: str, answer: str) -> float:
    nums = re.findall(r"-?\d+", text.replace(",", ""))
    return 1.0 if nums and nums[-1] == answer else 0.0


def run_one(
    engine: Engine, task: dict[str, str], arm: str, strategy: str, scorer: str, budget: int, seed: int
) -> dict[str, Any]:
    name, options = STRATEGIES[strategy]
    prompt = f"{SHOT[arm]}Q: {task['question']}\nA:"
    islands = Islands(tools=builtin_tools(["calc"]), describe_tools=False) if arm == "CALC" else None
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.7, stop=["\nQ:", "\nA:"])
    score: Any = (lambda t, a=task["answer"]: solved(t, a)) if scorer == "verifier" else "logprob"
    t0 = time.perf_counter()
    tree = search(
        engine, prompt, name, scorer=score, budget=budget, params=params, seed=seed, raw=True, islands=islands,
        **options,
    )  # fmt: skip
    best = tree.best_node
    calls = [n for n in tree.candidates() if n.spans]
    return {
        "arm": arm,
        "strategy": strategy,
        "scorer": scorer,
        "budget_tokens": budget,
        "question": task["question"],
        "seed": seed,
        "solved": int(solved(tree.text, task["answer"])),
        "winner_called": int(best is not None and bool(best.spans)),
        "candidates": len(tree) - 1,
        "candidates_calling": len(calls),
        "generated_tokens": tree.spend["generated_tokens"],
        "prompt_tokens": tree.spend["prompt_tokens"],
        "wall_s": round(time.perf_counter() - t0, 2),
        "text": " ".join(tree.text.split())[:120],
    }


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        groups[(r["scorer"], r["budget_tokens"], r["strategy"], r["arm"])][r["seed"]].append(r)
    out = []
    for (scorer, budget, strategy, arm), by_seed in sorted(groups.items()):
        rates = [statistics.mean(x["solved"] for x in rs) for rs in by_seed.values()]
        runs = [x for rs in by_seed.values() for x in rs]
        out.append(
            {
                "scorer": scorer,
                "budget_x": budget // MAX_TOKENS,
                "strategy": strategy,
                "arm": arm,
                "tasks": len(runs) // len(by_seed),
                "seeds": len(by_seed),
                "solved": round(statistics.mean(rates), 4),
                "solved_sd": round(statistics.stdev(rates), 4) if len(rates) > 1 else 0.0,
                "winner_called": round(statistics.mean(x["winner_called"] for x in runs), 3),
                "calling_share": round(
                    sum(x["candidates_calling"] for x in runs) / max(1, sum(x["candidates"] for x in runs)), 3
                ),
                "tokens": round(statistics.mean(x["generated_tokens"] for x in runs), 1),
                "s_per_run": round(statistics.mean(x["wall_s"] for x in runs), 2),
            }
        )
    return out


def print_table(summary: list[dict[str, Any]]) -> None:
    print("\nscorer    budget strategy   arm       solved        winner called  candidates calling  tokens  s/run")
    for s in summary:
        print(
            f"{s['scorer']:9} {s['budget_x']:>5}× {s['strategy']:10} {s['arm']:8} "
            f"{s['solved']:>6.2f} ± {s['solved_sd']:<5.2f} {s['winner_called']:>10.2f} {s['calling_share']:>16.2f}"
            f"  {s['tokens']:>7.0f} {s['s_per_run']:>6.1f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 tasks, 1 seed, budgets 1× and 4×.")
    ap.add_argument("--tasks", type=int, default=None, help="Arithmetic tasks (default 16).")
    ap.add_argument("--seeds", type=int, default=None, help="Search seeds (default 2).")
    ap.add_argument("--budgets", default=None, help="Multiples of one sample's 32 tokens (default 1,4,8).")
    ap.add_argument("--scorers", default="verifier,logprob", help="verifier and/or logprob.")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 is far faster on a shared CPU).")
    ap.add_argument("--docs", action="store_true", help="Also write the summary to docs/islands_search.csv.")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    n_tasks = args.tasks or (4 if args.quick else 16)
    seeds = list(range(args.seeds or (1 if args.quick else 2)))
    budgets = [int(x) for x in (args.budgets or ("1,4" if args.quick else "1,4,8")).split(",")]
    scorers = [x for x in args.scorers.split(",") if x]
    engine = Engine(load())
    work = tasks(n_tasks)
    plan = [
        (scorer, bx * MAX_TOKENS, strategy, arm)
        for scorer in scorers
        for bx in budgets
        for strategy in STRATEGIES
        for arm in SHOT
        if not (bx == 1 and strategy != "best_of_n")  # at 1× every strategy is one sample
    ]
    total = len(plan) * len(work) * len(seeds)
    print(f"{len(work)} tasks × {len(seeds)} seeds × {len(plan)} settings = {total} searches", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with (OUT / "islands_search.csv").open("w", newline="") as fh:
        writer = None
        for scorer, budget, strategy, arm in plan:
            for seed in seeds:
                for task in work:
                    row = run_one(engine, task, arm, strategy, scorer, budget, seed)
                    rows.append(row)
                    if writer is None:
                        writer = csv.DictWriter(fh, fieldnames=list(row))
                        writer.writeheader()
                    writer.writerow(row)
                    fh.flush()
            done = len(rows)
            print(f"  {done}/{total}  {scorer} {budget // MAX_TOKENS}× {strategy} {arm}  "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
    summary = summarise(rows)
    print_table(summary)
    print(f"\n{time.perf_counter() - t0:.0f} s; runs in {OUT / 'islands_search.csv'}")
    if args.docs:
        with (DOCS / "islands_search.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(summary[0]))
            writer.writeheader()
            writer.writerows(summary)


if __name__ == "__main__":
    main()
