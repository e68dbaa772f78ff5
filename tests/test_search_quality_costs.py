"""bench/search_quality.py: strategies against best-of-n at equal wall time / computed tokens."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def sq():
    path = Path(__file__).resolve().parents[1] / "bench" / "search_quality.py"
    spec = importlib.util.spec_from_file_location("search_quality_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _row(strategy: str, solved: float, wall: float, computed: float) -> dict:
    return {
        "setting": "verifier",
        "group": "all",
        "strategy": strategy,
        "solved": solved,
        "wall_s": wall,
        "computed_tokens": computed,
    }


def test_equal_cost_delta_interpolates_best_of_n_in_log_cost(sq) -> None:
    base = [_row("best_of_n", 0.2, 1.0, 100.0), _row("best_of_n", 0.6, 4.0, 400.0)]
    s = _row("paths", 0.5, 2.0, 800.0)
    summary = [*base, s]
    # log 2 is halfway between log 1 and log 4: best-of-n there is 0.4.
    assert sq.equal_cost_delta(summary, s, "wall_s") == pytest.approx(0.1)
    assert math.isnan(sq.equal_cost_delta(summary, s, "computed_tokens"))  # beyond best-of-n's range
    assert math.isnan(sq.equal_cost_delta(summary, base[0], "wall_s"))
