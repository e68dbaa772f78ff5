"""Does search beat best-of-n at equal compute? Solved rate vs generated tokens per strategy.

    python bench/search_quality.py --quick --threads 1     # 6 tasks, 2 seeds
    python bench/search_quality.py --sizes 5,6 --arithmetic 0 --threads 1 \
        --strategies best_of_n,paths,tree,beam,zero_order,synthesize --judge-strategies best_of_n,paths \
        --tag search_quality_full --docs                  # the run quoted in docs/guide/search.md (~70 min)
    python bench/search_quality.py --backend llamacpp --sizes 5,6 --arithmetic 0 --threads 1 \
        --strategies best_of_n,paths,tree --judge-strategies '' --baseline-budgets 64 \
        --tag sq_llamacpp_dev               # search at equal cost (prefix cache on)
    python bench/search_quality.py --from-csv bench/out/search_quality_full.csv   # re-summarise / plot

On a CPU shared with other processes use ``--threads 1``: torch's spinning threads slow
down tenfold when the cores are oversubscribed.

Tasks (development sets, say so when quoting numbers):
- ``../shared/bench/concepts_dev.jsonl`` (or ``$SAZANAMI_CONCEPTS``): write one sentence that
  uses every given word (3–6 words); coverage = fraction used (inflections count), solved = all;
- reasoning-gym ``basic_arithmetic`` (two positive 1–2 digit terms, +): solved = the last
  integer of the answer is the sum. Generated offline with a fixed seed.

Budgets are multiples of one sample's tokens (U = the mean completion length of one plain
sample at T = 0.7 over the tasks, measured first). Every token the model generates counts,
judge replies and syntheses included; prompt tokens are reported beside, with the prefix cache's
reused prompt tokens (``prompt_tokens`` are those computed), ``computed_tokens`` (generated +
computed prompt tokens) and each strategy's solved rate minus best-of-n's at equal wall time
and at equal computed tokens. Every search starts with an empty prefix cache (within a search
it reuses what it computed). The statistics (groups, paired deltas, equal-cost deltas) live in
:mod:`sazanami.evals.search_quality_stats`. Held-out concept tasks: ``SAZANAMI_CONCEPTS=bench/data/concepts_test.jsonl``.
Two settings:

- ``verifier``: the task's own checker is the scorer (contains / the arithmetic check);
- ``judge``: the model's own 0–100 judgement is the scorer (no oracle).

In both, the reported ``solved`` applies the task's checker to the search's winner.
Baseline = best_of_n with plain sampling (T = 0.7, no fluctuation). Writes
``bench/out/search_quality.csv`` (one row per run), ``search_quality_summary.csv`` and
``search_quality.png``; ``--docs`` also copies the plot and summary to ``docs/``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shutil
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sazanami import Engine, SamplingParams, load  # noqa: E402
from sazanami.evals.search_quality_stats import (  # noqa: E402
    EQUAL_COSTS,
    equal_cost_delta,  # noqa: F401  (re-exported: tests/test_search_quality_costs.py reads it here)
    read_runs,
    summarise,
    summary_csv,
    unit_of,
)
from sazanami.search import search  # noqa: E402
from sazanami.search.inflection import concept_coverage  # noqa: E402

CONCEPTS = Path(os.environ.get("SAZANAMI_CONCEPTS", ROOT.parent / "shared" / "bench" / "concepts_dev.jsonl"))
OUT = ROOT / "bench" / "out"
DOCS = ROOT / "docs"


@dataclass
class Task:
    id: str
    group: str
    """concepts-3 ... concepts-6, arithmetic."""
    prompt: str
    check: Callable[[str], float]
    """Oracle: fraction in [0, 1]; 1 = solved."""
    max_tokens: int


def concept_tasks(sizes: set[int], per_size: int | None) -> list[Task]:
    tasks, count = [], defaultdict(int)
    for line in CONCEPTS.read_text().splitlines():
        d = json.loads(line)
        size = len(d["concepts"])
        if size not in sizes or (per_size is not None and count[size] >= per_size):
            continue
        count[size] += 1
        words = d["concepts"]
        tasks.append(Task(d["id"], f"concepts-{size}", d["prompt"], lambda t, w=words: concept_coverage(t, w)[0], 40))
    return tasks


def arithmetic_tasks(n: int) -> list[Task]:
    if n <= 0:
        return []
    import reasoning_gym as rg

    ds = rg.create_dataset(
        "basic_arithmetic",
        size=n,
        seed=2026,
        min_terms=2,
        max_terms=2,
        min_digits=1,
        max_digits=2,
        operators=("+",),
        allow_parentheses=False,
        allow_negation=False,
    )

    def check(text: str, answer: str) -> float:
        nums = re.findall(r"-?\d+", text.replace(",", ""))
        return 1.0 if nums and nums[-1] == answer else 0.0

    return [
        Task(f"rg{i:02d}", "arithmetic", x["question"], lambda t, a=x["answer"]: check(t, a), 48)
        for i, x in enumerate(ds)
    ]


# name -> (strategy, options, sampling-parameter changes)
STRATEGIES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "best_of_n": ("best_of_n", {}, {}),
    "best_of_n_pink": ("best_of_n", {}, {"fluctuation": "pink-temperature"}),
    "anneal": ("anneal", {"rounds": 3}, {}),
    "paths": ("noise_search", {"mode": "paths", "rounds": 4}, {}),
    "zero_order": ("noise_search", {"mode": "zero-order", "rounds": 4}, {"fluctuation": "pink-temperature"}),
    "beam": ("beam", {}, {}),
    "tree": ("tree", {"chunk": 8, "branch": 3, "width": 4, "expand": 2}, {}),
    "optimize": ("optimize", {"n": 4}, {}),
    "synthesize": ("synthesize", {"base": "best_of_n", "k": 3}, {}),
}


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def unit_tokens(engine: Engine, tasks: list[Task]) -> int:
    """Mean completion tokens of one plain sample (T = 0.7) over the tasks."""
    lengths = []
    for t in tasks:
        out = engine.generate(t.prompt, SamplingParams(n=2, seed=0, max_tokens=t.max_tokens, temperature=0.7))
        lengths += [c.completion_tokens for c in out]
    return max(1, round(statistics.mean(lengths)))


def run_one(engine: Engine, task: Task, setting: str, name: str, budget: int, seed: int, unit: int) -> dict[str, Any]:
    strategy, options, changes = STRATEGIES[name]
    params = SamplingParams(max_tokens=task.max_tokens, temperature=0.7, **changes)
    scorer: Any = "judge" if setting == "judge" else task.check
    engine.clear_prefix_cache()  # every search starts cold: no blocks from the runs before it
    t0 = time.perf_counter()
    tree = search(engine, task.prompt, strategy, scorer=scorer, budget=budget, params=params, seed=seed, **options)
    best = tree.text
    quality = task.check(best)
    s = tree.spend
    return {
        "setting": setting,
        "strategy": name,
        "budget_tokens": budget,
        "task": task.id,
        "group": task.group,
        "seed": seed,
        "solved": int(quality >= 1.0),
        "quality": round(quality, 4),
        "score": tree.best_node.score if tree.best_node is not None else None,
        "generated_tokens": s["generated_tokens"],
        "prompt_tokens": s["prompt_tokens"],
        "prompt_tokens_reused": s.get("prompt_tokens_reused", 0),
        # What the model computed: new tokens plus prompt tokens the prefix cache did not supply.
        "computed_tokens": s["generated_tokens"] + s["prompt_tokens"],  # prompt_tokens: computed ones
        "judge_tokens": s["by_kind"].get("judge", 0),
        "nodes": len(tree.nodes),
        "wall_s": round(time.perf_counter() - t0, 2),
        "unit": unit,
        "text": " ".join(best.split())[:200],
    }


def print_table(summary: list[dict[str, Any]], group: str) -> None:
    rows = [s for s in summary if s["group"] == group]
    if not rows:
        return
    print(
        f"\n== solved rate, {group} (mean ± sd over seeds; tokens = mean generated per run; "
        "paired: − best-of-n at the same budget by (task, seed), 95 % bootstrap over tasks, in points) =="
    )
    head = ("setting", "strategy", "budget", "solved", "quality", "tokens", "prompt", "s/run")
    print("{:9} {:15} {:>7} {:>13} {:>8} {:>7} {:>7} {:>6}".format(*head))
    base = {(s["setting"], s["budget_tokens"]): s["solved"] for s in rows if s["strategy"] == "best_of_n"}
    for s in rows:
        d = s["solved"] - base.get((s["setting"], s["budget_tokens"]), math.nan)
        delta = f" ({d * 100:+.0f})" if s["strategy"] != "best_of_n" and not math.isnan(d) else ""
        paired = ""
        if not math.isnan(s.get("vs_best_of_n_paired", math.nan)):
            paired = f"  paired {s['vs_best_of_n_paired'] * 100:+.0f} [{s['vs_best_of_n_lo'] * 100:+.0f}, {s['vs_best_of_n_hi'] * 100:+.0f}]"
        print(
            f"{s['setting']:9} {s['strategy']:15} {s['budget_x']:>6}× {s['solved']:>6.2f}±{s['solved_sd']:<4.2f}"
            f"{delta:6} {s['quality']:>6.2f} {s['tokens']:>7.0f} {s['prompt_tokens']:>7.0f} {s['wall_s']:>6.1f}{paired}"
        )


def print_equal_cost(summary: list[dict[str, Any]], group: str) -> None:
    """Each strategy's solved rate minus best-of-n's at equal wall time and equal computed tokens."""
    rows = [s for s in summary if s["group"] == group and s["strategy"] != "best_of_n"]
    if not rows:
        return
    print(f"\n== {group}: solved rate − best-of-n at equal wall time / computed tokens (nan: outside its range) ==")
    for s in rows:
        w, c = (s[f"vs_best_of_n_at_equal_{k}"] for k in EQUAL_COSTS)
        print(
            f"{s['setting']:9} {s['strategy']:15} {s['budget_x']:>6}× {s['wall_s']:>7.1f} s {w:+6.2f}   "
            f"{s['computed_tokens']:>8.0f} tok {c:+6.2f}"
        )


def plot(summary: list[dict[str, Any]], path: Path, unit: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted({s["setting"] for s in summary}, key=lambda x: x != "verifier")
    groups = {s["group"] for s in summary}
    # "all" repeats "concepts-5-6" when those are the only tasks.
    panels = (
        ["concepts-5-6"] if groups <= {"concepts-5", "concepts-6", "concepts-5-6", "all"} else ["concepts-5-6", "all"]
    )
    panels = [g for g in panels if g in groups]
    fig, axes = plt.subplots(len(settings), len(panels), figsize=(5.5 * len(panels), 4 * len(settings)), squeeze=False)
    for i, setting in enumerate(settings):
        for j, group in enumerate(panels):
            ax = axes[i][j]
            rows = [s for s in summary if s["setting"] == setting and s["group"] == group]
            for index, name in enumerate(STRATEGIES):
                pts = sorted((s["budget_x"], s["solved"], s["solved_sd"]) for s in rows if s["strategy"] == name)
                if not pts:
                    continue
                x, y, e = zip(*pts, strict=False)
                # One colour per strategy in every panel; the baseline is the thick black line.
                style = dict(lw=2.5, color="black") if name == "best_of_n" else dict(lw=1.3, color=f"C{index % 10}")
                ax.errorbar(x, y, yerr=e, marker="o", ms=4, capsize=2, label=name, **style)
            ax.set_xscale("log", base=2)
            xs = sorted({s["budget_x"] for s in rows})
            ax.set_xticks(xs, [f"{x:g}×" for x in xs])
            ax.set_xlabel(f"budget per task (× one sample ≈ {unit} tokens)")
            ax.set_ylabel("solved rate")
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{setting} scorer · {group}")
            ax.grid(alpha=0.3)
    for row in axes:
        row[-1].legend(fontsize=8, loc="lower right")
    fig.suptitle("sazanami search vs best-of-n at equal generated tokens (SmolLM2-135M, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="4 concept tasks (5–6 words) + 2 arithmetic, 2 seeds, 5 strategies."
    )
    ap.add_argument("--sizes", default=None, help="Concept-set sizes, e.g. 3,4,5,6.")
    ap.add_argument("--per-size", type=int, default=None, help="Concept tasks per size.")
    ap.add_argument("--arithmetic", type=int, default=None, help="reasoning-gym arithmetic tasks.")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--budgets", default="1,4,16", help="Multiples of one sample's tokens.")
    ap.add_argument(
        "--baseline-budgets",
        default="",
        help="Extra budgets run by best_of_n only (e.g. 64), so that the equal-wall and equal-computed-token "
        "comparisons have a baseline curve that reaches the searches' larger costs.",
    )
    ap.add_argument("--strategies", default=None, help=f"Comma list of {', '.join(STRATEGIES)}.")
    ap.add_argument("--judge-strategies", default=None, help="Strategies also run with the judge scorer ('' = none).")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--tag", default="search_quality", help="Output file stem.")
    ap.add_argument("--docs", action="store_true", help="Copy the plot and summary to docs/.")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch / llama.cpp threads (1 is far faster on a shared CPU)."
    )
    ap.add_argument(
        "--backend", default="torch", choices=("torch", "llamacpp"), help="Engine backend (the embedded model on both)."
    )
    ap.add_argument("--from-csv", default=None, help="Only summarise and plot an existing (maybe partial) run CSV.")
    args = ap.parse_args()
    if args.from_csv:
        report(Path(args.from_csv), args.docs)
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    quick = args.quick
    sizes = {int(x) for x in (args.sizes or ("5,6" if quick else "3,4,5,6")).split(",")}
    per_size = args.per_size if args.per_size is not None else (2 if quick else None)
    n_arith = args.arithmetic if args.arithmetic is not None else (2 if quick else 6)
    seeds = list(range(args.seeds if args.seeds is not None else 2))
    budgets_x = [float(x) for x in args.budgets.split(",")]
    extra_x = [float(x) for x in args.baseline_budgets.split(",") if x]
    default = "best_of_n,anneal,paths,tree,optimize" if quick else ",".join(STRATEGIES)
    names = [x for x in (args.strategies or default).split(",") if x]
    judge_default = "best_of_n,paths" if quick else "best_of_n,anneal,paths,tree,optimize"
    judge_names = [
        x for x in (args.judge_strategies if args.judge_strategies is not None else judge_default).split(",") if x
    ]
    for n in names + judge_names:
        if n not in STRATEGIES:
            ap.error(f"unknown strategy {n!r}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    engine = Engine(load(backend=args.backend, threads=args.threads if args.backend == "llamacpp" else None))
    tasks = concept_tasks(sizes, per_size) + arithmetic_tasks(n_arith)
    unit = unit_tokens(engine, tasks)
    print(
        f"{len(tasks)} tasks from {CONCEPTS.name}, seeds {seeds}, one sample ≈ {unit} tokens; {args.backend} backend, "
        f"threads {args.threads or torch_threads()}; "
        f"budgets {budgets_x}× → "
        f"{[round(b * unit) for b in budgets_x]} tokens; {os.cpu_count()} CPUs",
        flush=True,
    )

    plan = []
    for setting, strategies in (("verifier", names), ("judge", judge_names)):
        for bx in budgets_x:
            for name in strategies:
                # At 1× every strategy is one (clipped) sample: run the baseline only.
                if bx <= 1 and name != "best_of_n":
                    continue
                plan.append((setting, name, max(1, round(bx * unit))))
        if "best_of_n" in strategies:
            plan += [(setting, "best_of_n", max(1, round(bx * unit))) for bx in extra_x]
    rows: list[dict[str, Any]] = []
    raw_path = out / f"{args.tag}.csv"
    with raw_path.open("w", newline="") as fh:
        writer = None
        total = len(plan) * len(tasks) * len(seeds)
        done = 0
        for setting, name, budget in plan:
            t_cfg = time.perf_counter()
            for task in tasks:
                for seed in seeds:
                    row = run_one(engine, task, setting, name, budget, seed, unit)
                    rows.append(row)
                    if writer is None:
                        writer = csv.DictWriter(fh, fieldnames=list(row))
                        writer.writeheader()
                    writer.writerow(row)
                    fh.flush()
                    done += 1
            cfg_rows = [r for r in rows if (r["setting"], r["strategy"], r["budget_tokens"]) == (setting, name, budget)]
            solved = statistics.mean(r["solved"] for r in cfg_rows)
            tokens = statistics.mean(r["generated_tokens"] for r in cfg_rows)
            elapsed = time.perf_counter() - t_cfg
            print(
                f"[{done}/{total}] {setting:8} {name:15} {budget:5} tok: "
                f"solved {solved:.2f}  tokens {tokens:.0f}  {elapsed:.0f} s"
            )
            sys.stdout.flush()

    report(raw_path, args.docs)
    print(f"({(time.perf_counter() - t0) / 60:.1f} min)")


def report(raw_path: Path, docs: bool) -> None:
    """Summary CSV, tables and plot from a run CSV (complete or partial)."""
    rows = read_runs(raw_path)
    unit = unit_of(rows)
    summary = summarise(rows, unit)
    stem = raw_path.with_suffix("")
    sum_path = Path(f"{stem}_summary.csv")
    with sum_path.open("w", newline="") as fh:
        fh.write(summary_csv(summary))
    for group in ("concepts-5-6", "arithmetic", "all"):
        print_table(summary, group)
        print_equal_cost(summary, group)
    png = Path(f"{stem}.png")
    plot(summary, png, unit)
    print(f"\nwrote {raw_path}, {sum_path}, {png}")
    if docs:
        DOCS.mkdir(exist_ok=True)
        shutil.copy(png, DOCS / png.name)
        shutil.copy(sum_path, DOCS / sum_path.name)
        print(f"copied to {DOCS}")


if __name__ == "__main__":
    main()
