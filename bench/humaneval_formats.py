"""Greedy HumanEval in two prompt formats, paired by problem: raw completion against chat.

    python bench/humaneval_formats.py [--raw bench/results/humaneval/exp1.jsonl]
                                      [--chat bench/results/humaneval/greedy_chat.jsonl]
                                      [--setting greedy] [--boot 10000] [--seed 0]

Reads the graded samples of ``sazanami bench humaneval`` (one JSON line per sample), keeps the
``--setting`` rows of both files, pairs them by task, and prints for the problems both have:
the pass rate of each format, the paired difference (chat − raw) with a percentile bootstrap
95 % interval over problems (seeded), and the discordant pairs (passed in one format only).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def passed_by_task(path: Path, setting: str) -> dict[str, bool]:
    """task_id → passed, for the ``setting`` rows of a graded-samples file (sample 0); a line a
    running bench is still writing is skipped."""
    out = {}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            continue
        if rec and rec.get("setting") == setting and rec.get("sample", 0) == 0 and "passed" in rec:
            out[rec["task_id"]] = bool(rec["passed"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--raw", default=str(ROOT / "bench/results/humaneval/exp1.jsonl"))
    ap.add_argument("--chat", default=str(ROOT / "bench/results/humaneval/greedy_chat.jsonl"))
    ap.add_argument("--setting", default="greedy")
    ap.add_argument("--boot", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not 100 <= args.boot <= 1_000_000:
        raise SystemExit(f"--boot must be in [100, 1000000], got {args.boot}")
    raw, chat = passed_by_task(Path(args.raw), args.setting), passed_by_task(Path(args.chat), args.setting)
    tasks = sorted(set(raw) & set(chat), key=lambda t: int(t.split("/")[1]))
    if not tasks:
        raise SystemExit("no problem is in both files")
    diffs = [int(chat[t]) - int(raw[t]) for t in tasks]
    rng = random.Random(args.seed)
    means = sorted(sum(rng.choice(diffs) for _ in diffs) / len(diffs) for _ in range(args.boot))
    lo, hi = means[int(0.025 * args.boot)], means[int(0.975 * args.boot) - 1]
    n = len(tasks)
    print(f"problems in both files: {n} (HumanEval/{tasks[0].split('/')[1]} … /{tasks[-1].split('/')[1]})")
    print(f"raw  {args.setting} pass@1: {100 * sum(raw[t] for t in tasks) / n:.1f} %")
    print(f"chat {args.setting} pass@1: {100 * sum(chat[t] for t in tasks) / n:.1f} %")
    print(f"chat − raw: {100 * sum(diffs) / n:+.1f} points, 95 % bootstrap interval [{100 * lo:+.1f}, {100 * hi:+.1f}]")
    print(f"passed in chat only: {diffs.count(1)}; in raw only: {diffs.count(-1)}")


if __name__ == "__main__":
    main()
