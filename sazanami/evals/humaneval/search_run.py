"""HumanEval Experiment 2: search strategies against best-of-n, scored by the visible doctests.

Each *arm* is a search strategy at a token budget (generated tokens, the search ledger's unit).
Every candidate is scored by :class:`~sazanami.search.doctest_scorer.DoctestScorer` (the prompt's
own ``>>>`` examples, run in the sandbox); the winner is graded by the hidden ``check`` tests.
A problem's arms run back to back (so load on the machine falls on all of them alike) and are
appended to the JSONL at once, so a killed run resumes where it stopped. ``optimize`` asks for
improvements with :class:`CodeImprover`: the failed draft stays in the prompt as an earlier
definition, the first failing example is fed back as a comment, and the model writes the body
again — so every candidate, draft or improvement, is a body that continues the task's prompt.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sazanami.errors import ParameterError
from sazanami.evals.humaneval.grading import grade
from sazanami.evals.humaneval.problems import Problem, choose_problems
from sazanami.evals.humaneval.run import STOPS, machine, read_records
from sazanami.sampling.params import SamplingParams
from sazanami.search.doctest_scorer import DoctestScorer
from sazanami.search.synthesis import Improver
from sazanami.seeds import derive_seed

__all__ = ["ARMS", "CodeImprover", "SearchConfig", "run_search_arms"]

ARMS: dict[str, dict[str, Any]] = {
    "best_of_n@256": {"strategy": "best_of_n", "budget": 256},
    "best_of_n@512": {"strategy": "best_of_n", "budget": 512},
    "best_of_n@1024": {"strategy": "best_of_n", "budget": 1024},
    "paths@512": {"strategy": "noise_search", "budget": 512, "options": {"mode": "paths"}},
    "tree@512": {"strategy": "tree", "budget": 512},
    "optimize@512": {"strategy": "optimize", "budget": 512, "options": {"n": 2}},
}
"""Named arms: a strategy, its budget in generated tokens and its options (defaults otherwise).
``best_of_n@*`` form the reference curve (pass rate against wall time or computed tokens)."""

CODE_IMPROVE_TEMPLATE = (
    "{task}{draft}\n\n\n{feedback}# The implementation above is wrong. A corrected implementation:\n{task}"
)
"""The draft as an earlier definition, the feedback as a comment, then the task's prompt again."""


@dataclass(frozen=True)
class CodeImprover(Improver):
    """Improve-and-score for raw code completion: the improvement is again a body of the task."""

    template: str = CODE_IMPROVE_TEMPLATE

    def prompt(self, task: str, draft: str, reason: str = "") -> str:
        note = "".join(f"# {line}\n" for line in reason.splitlines()) if self.feedback and reason else ""
        body = draft.rstrip()  # keep the body's indentation: it continues the task's def
        return self.template.replace("{task}", task).replace("{draft}", body).replace("{feedback}", note)


def reference_arms(arms: list[str] | tuple[str, ...]) -> list[str]:
    """The best-of-n arms, in budget order (the reference curve)."""
    return sorted((a for a in arms if ARMS[a]["strategy"] == "best_of_n"), key=lambda a: ARMS[a]["budget"])


@dataclass(frozen=True)
class SearchConfig:
    """One Experiment-2 run over HumanEval."""

    model: str = "qwen2.5-coder-0.5b"
    """Registry name or .gguf path."""
    arms: tuple[str, ...] = tuple(ARMS)
    """Arm names (see `--list-arms`), comma-separated."""
    temperature: float = 0.8
    """Sampling temperature of every candidate; in (0, 2]."""
    max_tokens: int = 256
    """New tokens per candidate; in [1, 2048]."""
    half: str = "test"
    """dev (even task numbers), test (odd) or all."""
    limit: int | None = None
    """The first N problems of the half (None: all)."""
    seed: int = 0
    """Base seed: problem p's searches use seed derive_seed(seed, p) in every arm."""
    problems: tuple[int, ...] = field(default=())
    """Explicit task numbers (overrides half and limit)."""

    def __post_init__(self) -> None:
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ParameterError(
                "arms", f"arms must be names from {', '.join(ARMS)}, got {', '.join(unknown) or 'none'}"
            )
        if not 0 < self.temperature <= 2:
            raise ParameterError("temperature", f"temperature must be in (0, 2], got {self.temperature}")
        if not 1 <= self.max_tokens <= 2048:
            raise ParameterError("max_tokens", f"max_tokens must be in [1, 2048], got {self.max_tokens}")
        if self.limit is not None and self.limit < 1:
            raise ParameterError("limit", f"limit must be in [1, 164], got {self.limit}")

    def chosen(self) -> list[Problem]:
        """This run's problems (:func:`~sazanami.evals.humaneval.problems.choose_problems`)."""
        return choose_problems(self.half, self.limit, self.problems)

    def params(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, max_tokens=self.max_tokens, stop=STOPS)


def run_arm(engine: Any, problem: Problem, arm: str, config: SearchConfig, pool: ThreadPoolExecutor) -> dict[str, Any]:
    """One search of one problem: the winner graded by the hidden tests, every finished candidate too."""
    from sazanami.search.strategies import search

    spec = ARMS[arm]
    start = time.perf_counter()
    tree = search(
        engine,
        problem.prompt,
        spec["strategy"],
        scorer=DoctestScorer(),
        budget=spec["budget"],
        params=config.params(),
        seed=derive_seed(config.seed, problem.number),
        raw=True,
        improver=CodeImprover() if spec["strategy"] == "optimize" else None,
        **spec.get("options", {}),
    )
    wall = time.perf_counter() - start  # generation and doctest scoring, as a user of the search waits
    best = next((n for n in tree.nodes if n.id == tree.best), None)
    finished = [n for n in tree.nodes if n.kind != "root" and n.finish_reason is not None and n.kind != "partial"]
    verdicts = list(pool.map(lambda text: grade(problem, text), [n.text for n in finished]))
    by_id = {n.id: ok for n, ok in zip(finished, verdicts, strict=True)}
    passed = by_id[best.id] if best is not None and best.id in by_id else (grade(problem, best.text) if best else False)
    spend = tree.spend or {}
    return {
        "task_id": problem.task_id,
        "arm": arm,
        "strategy": spec["strategy"],
        "budget": spec["budget"],
        "seed": tree.seed,
        "passed": bool(passed),
        "winner_score": best.score if best is not None else None,
        "candidates": len(finished),
        "candidates_passing": sum(verdicts),
        "candidate_scores": [n.score for n in finished],
        "wall_s": round(wall, 3),
        "generated_tokens": spend.get("generated_tokens", 0),
        "prompt_tokens": spend.get("prompt_tokens", 0),
        "prompt_tokens_reused": spend.get("prompt_tokens_reused", 0),
        "text": best.text if best is not None else "",
    }


def done_arms(path: Path) -> set[tuple[str, str]]:
    """(task_id, arm) pairs already in the output file."""
    return {(r["task_id"], r["arm"]) for r in read_records(path)} if path.exists() else set()


def run_search_arms(
    config: SearchConfig,
    engine: Any,
    out: Path,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Run the arms ``out`` lacks, problem by problem; returns the number of problems finished."""
    from tqdm.auto import tqdm

    done = done_arms(out)
    todo = [(p, [a for a in config.arms if (p.task_id, a) not in done]) for p in config.chosen()]
    todo = [(p, arms) for p, arms in todo if arms]
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(sys.argv),
        "backend": getattr(getattr(engine.backend, "capabilities", None), "backend", "?"),
        "config": asdict(config),
    }
    with out.with_suffix(".meta.jsonl").open("a") as f:
        f.write(json.dumps(meta) + "\n")
    bar = tqdm(total=len(todo), unit="problem", disable=not progress, file=sys.stderr)
    finished = 0
    with ThreadPoolExecutor(max_workers=2) as pool:
        for problem, arms in todo:
            if should_stop():
                break
            records = [run_arm(engine, problem, arm, config, pool) for arm in arms]
            with out.open("a") as f:
                for rec in records:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            finished += 1
            bar.update(1)
            if log:
                cells = " ".join(f"{r['arm']}={'pass' if r['passed'] else 'fail'}({r['wall_s']:.0f}s)" for r in records)
                log(f"{problem.task_id}: {cells}")
    bar.close()
    return finished
