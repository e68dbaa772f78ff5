"""The frontier's files: the per-setting and per-prompt CSVs, the plots and the run's facts (JSON)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from sazanami.errors import ParameterError
from sazanami.evals.frontier.plots import plot_frontier, plot_gains
from sazanami.evals.frontier.run import FrontierResult


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """One row per setting: means, interval bounds, frontier gain (see :meth:`SettingResult.row`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not rows:
        raise ParameterError("rows", "rows must not be empty")
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows written by :func:`write_csv`, numbers parsed back."""
    out = []
    with Path(path).open(newline="") as f:
        for row in csv.DictReader(f):
            parsed: dict[str, Any] = {}
            for k, v in row.items():
                if k in ("method", "sweep", "label", "params") or k.endswith("verdict"):
                    parsed[k] = v
                elif v in ("True", "False"):
                    parsed[k] = v == "True"
                else:
                    parsed[k] = float(v) if v not in ("", "nan") else math.nan
            out.append(parsed)
    return out


def _shown_path(path: Path) -> str:
    """``path`` relative to the working directory when inside it (reports do not leak home paths)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def write_outputs(result: FrontierResult, out: str | Path, name: str = "frontier") -> dict[str, Path]:
    """Write the run's outputs under ``out``: ``NAME.csv`` (one row per setting), ``NAME.png``
    (the frontier), ``NAME_gain.png`` (gains), ``NAME_prompts.csv`` (per prompt), ``NAME.json`` (run facts)."""
    out = Path(out)
    cfg = result.config
    rows = result.rows()
    title = (
        f"{cfg.model or 'smollm2-135m'} · {Path(cfg.prompts).name} · {len(result.prompts)} prompts × "
        f"{cfg.samples} samples × {cfg.max_tokens} tokens\n95% bootstrap intervals over prompts"
    )
    paths = {"csv": write_csv(rows, out / f"{name}.csv"), "png": plot_frontier(rows, out / f"{name}.png", title)}
    paths["gain_png"] = plot_gains(rows, out / f"{name}_gain.png", title)
    paths["prompts_csv"] = write_csv(result.prompt_rows(), out / f"{name}_prompts.csv")
    paths["json"] = write_run_facts(result, out / f"{name}.json")
    return paths


def write_run_facts(result: Any, path: Path, **extra: Any) -> Path:
    """``path``: a benchmark run's facts as JSON — its config, sizes, wall time, machine and
    per-setting timings (``result`` has ``config``, ``prompts``, ``results``, ``wall_s``,
    ``machine``), plus ``extra`` entries."""
    meta = {
        "config": {
            k: (_shown_path(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(result.config).items()
        },
        "prompts": len(result.prompts),
        "settings": len(result.results),
        **extra,
        "wall_s": round(result.wall_s, 1),
        "generated_rows": sum(r.generated for r in result.results),
        "machine": result.machine,
        "timings": [
            {"setting": r.setting.name, "seconds": round(r.seconds, 1), "generated_rows": r.generated}
            for r in result.results
        ],
    }
    path.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return path
