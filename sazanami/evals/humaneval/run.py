"""HumanEval sampling runs: every setting's samples for each problem, graded, appended to JSONL.

A problem's settings run as one engine batch (``samples`` rows per setting, the same row seeds
in every setting, so comparisons between settings are paired). Each finished problem is
appended to the output file at once, so a killed run resumes where it stopped. Every record names
its prompt format (raw or chat), and a run refuses to continue a file written in another format.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sazanami.errors import ParameterError
from sazanami.evals.humaneval.grading import grade
from sazanami.evals.humaneval.problems import Problem, check_format, choose_problems, prompt_text
from sazanami.models import cpu_model
from sazanami.sampling.params import SamplingParams
from sazanami.seeds import derive_seed

STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n```")
"""Raw completion ends where a new top-level statement begins (the Codex paper's stop set, plus a
closing Markdown fence). A chat answer has no stop strings: it ends at the model's end of turn."""

MAX_TOKENS = {"raw": 256, "chat": 512}
"""New tokens per sample when ``max_tokens`` is not given: a chat answer repeats the signature and
docstring and may add prose, so it gets twice a raw body's budget."""

SETTINGS: dict[str, dict[str, Any]] = {
    "greedy": {"temperature": 0.0},
    "t0.2": {"temperature": 0.2},
    "t0.4": {"temperature": 0.4},
    "t0.6": {"temperature": 0.6},
    "t0.8": {"temperature": 0.8},
    "t1.0": {"temperature": 1.0},
    "t1.2": {"temperature": 1.2},
    "min_p0.1-t1.0": {"temperature": 1.0, "min_p": 0.1},
    "top_p0.9-t0.8": {"temperature": 0.8, "top_p": 0.9},
    "white-temperature-t0.8": {"temperature": 0.8, "fluctuation": "white-temperature"},
    "pink-temperature-t0.8": {"temperature": 0.8, "fluctuation": "pink-temperature"},
    # noise version 1: Experiment 1 was pre-registered and started on it; a resumed run must not switch
    "pink-logits-t0.8": {"temperature": 0.8, "fluctuation": {"preset": "pink-logits", "noise_version": 1}},
    "pink-draw-t0.8": {"temperature": 0.8, "fluctuation": {"preset": "pink-draw", "noise_version": 1}},
}
"""Named sampler settings (SamplingParams fields). ``t*`` form the reference temperature curve."""


def temperature_curve(settings: list[str] | tuple[str, ...]) -> list[str]:
    """The settings of the reference curve (plain temperature, sampled), in temperature order."""
    curve = [s for s in settings if s.startswith("t") and s[1:].replace(".", "", 1).isdigit()]
    return sorted(curve, key=lambda s: float(s[1:]))


@dataclass(frozen=True)
class HumanEvalConfig:
    """One sampling run over HumanEval."""

    model: str = "qwen2.5-coder-0.5b"
    """Registry name or .gguf path."""
    settings: tuple[str, ...] = ("t0.2", "t0.6", "t1.0", "pink-temperature-t0.8", "pink-draw-t0.8")
    """Names from :data:`SETTINGS`."""
    samples: int = 8
    """Samples per problem and setting (greedy takes 1); in [1, 64]."""
    max_tokens: int | None = None
    """New tokens per sample; in [1, 2048] (None: 256 in the raw format, 512 in chat)."""
    half: str = "all"
    """dev (even task numbers), test (odd) or all."""
    limit: int | None = None
    """The first N problems of the half (None: all)."""
    seed: int = 0
    """Base seed: sample i of problem p has seed derive_seed(seed, p, i) in every setting."""
    problems: tuple[int, ...] = field(default=())
    """Explicit task numbers (overrides half and limit)."""
    batch_problems: int = 2
    """Problems whose rows run as one engine batch (so one long sample does not leave the batch
    at a single row while it finishes); in [1, 16]."""
    format: str = "raw"
    """Prompt format: raw (complete the prompt as plain text, stop at the next top-level statement)
    or chat (the model's chat template, a whole function in a code block, stop at end of turn)."""

    def __post_init__(self) -> None:
        check_format(self.format)
        tokens = MAX_TOKENS[self.format] if self.max_tokens is None else self.max_tokens
        object.__setattr__(self, "max_tokens", tokens)  # the records' config says what ran
        unknown = [s for s in self.settings if s not in SETTINGS]
        if unknown or not self.settings:
            raise ParameterError(
                "settings", f"settings must be names from {', '.join(SETTINGS)}, got {', '.join(unknown) or 'none'}"
            )
        if not 1 <= self.samples <= 64:
            raise ParameterError("samples", f"samples must be in [1, 64], got {self.samples}")
        if not 1 <= tokens <= 2048:
            raise ParameterError("max_tokens", f"max_tokens must be in [1, 2048], got {tokens}")
        if not 1 <= self.batch_problems <= 16:
            raise ParameterError("batch_problems", f"batch_problems must be in [1, 16], got {self.batch_problems}")
        if self.limit is not None and self.limit < 1:
            raise ParameterError("limit", f"limit must be in [1, 164], got {self.limit}")

    def chosen(self) -> list[Problem]:
        """This run's problems (:func:`~sazanami.evals.humaneval.problems.choose_problems`)."""
        return choose_problems(self.half, self.limit, self.problems)

    def params(self, setting: str, problem: Problem) -> SamplingParams:
        kwargs = dict(SETTINGS[setting])
        n = 1 if kwargs.get("temperature") == 0.0 else self.samples
        return SamplingParams(
            n=n,
            seed=derive_seed(self.seed, problem.number),
            max_tokens=self.max_tokens,
            stop=STOPS if self.format == "raw" else (),
            **kwargs,
        )


def check_resumable(config: HumanEvalConfig, path: Path) -> None:
    """Refuse to append ``config``'s samples to a file whose records were made in another prompt
    format (records written before the format was recorded are raw)."""
    records = read_records(path) if path.exists() else []
    formats = sorted({rec.get("format", "raw") for rec in records} - {config.format})
    if formats:
        raise ParameterError(
            "format",
            f"{path} holds {', '.join(formats)}-format records; run with --format {formats[0]} to continue it, "
            f"or write {config.format}-format samples to another --out (got --format {config.format})",
        )


def machine() -> str:
    """The CPU model and core count, for the records."""
    return f"{cpu_model()}, {os.cpu_count()} cores"


def done_keys(path: Path) -> set[tuple[str, str]]:
    """(task_id, setting) pairs already in the output file (a truncated last line is ignored)."""
    return {(rec["task_id"], rec["setting"]) for rec in read_records(path)} if path.exists() else set()


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every complete record of an output file. Records end at "\\n" only: a sample's text may
    hold U+2028 or a form feed, which ``str.splitlines`` would also split at."""
    out = []
    for line in path.read_text().split("\n"):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def run_humaneval(
    config: HumanEvalConfig,
    engine: Any,
    out: Path,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Generate and grade what ``out`` lacks; returns the number of problems done in this call."""
    from tqdm.auto import tqdm

    problems = config.chosen()
    check_resumable(config, out)
    done = done_keys(out)
    todo = [(p, [s for s in config.settings if (p.task_id, s) not in done]) for p in problems]
    todo = [(p, s) for p, s in todo if s]
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
        for at in range(0, len(todo), config.batch_problems):
            if should_stop():
                break
            group = todo[at : at + config.batch_problems]
            rows, owners = [], []  # owners[i]: (problem, setting) of row i
            for problem, settings in group:
                for setting in settings:
                    made = engine.rows_for(
                        [prompt_text(problem, config.format)],
                        config.params(setting, problem),
                        raw=config.format == "raw",
                    )
                    rows += made
                    owners += [(problem, setting)] * len(made)
            start = time.perf_counter()
            completions = engine.run(rows)
            wall = time.perf_counter() - start
            verdicts = list(
                pool.map(
                    lambda pc: grade(pc[0], pc[1].text, format=config.format),
                    zip([o[0] for o in owners], completions),
                )
            )
            tokens = sum(c.completion_tokens for c in completions)
            records = [
                {
                    "task_id": problem.task_id,
                    "setting": setting,
                    "format": config.format,
                    "sample": comp.index,
                    "seed": comp.seed,
                    "tokens": comp.completion_tokens,
                    "finish_reason": comp.finish_reason,
                    "passed": passed,
                    "batch_wall_s": round(wall, 3),
                    "batch_tokens": tokens,
                    "batch_rows": len(rows),
                    "text": comp.text,
                }
                for (problem, setting), comp, passed in zip(owners, completions, verdicts, strict=True)
            ]
            with out.open("a") as f:
                for rec in records:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            finished += len(group)
            bar.update(len(group))
            if log:
                for problem, settings in group:
                    mine = [r for r in records if r["task_id"] == problem.task_id]
                    passed = {s: sum(r["passed"] for r in mine if r["setting"] == s) for s in settings}
                    log(f"{problem.task_id}: passed {passed}")
                log(f"batch of {len(rows)} rows: {tokens} tokens in {wall:.1f} s ({tokens / wall:.1f} tok/s)")
    bar.close()
    return finished
