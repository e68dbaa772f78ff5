"""Shared fixtures: the tiny random model (seconds), the embedded model (real), and for the browser
tests the served app and a headless Chromium."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from sazanami import models
from sazanami.engine.loop import Engine

# `--backend auto` never measures in tests: llama.cpp for one row, torch for more
os.environ[models.AUTO_ROWS_ENV] = "2"

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
"""Debian's Chromium as the browser tests run it: headless, no sandbox (containers), no network of its own."""


@pytest.fixture
def whole_drafts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every drafted token is fed (no draft budget): how much is drafted then depends on the
    drafts alone, not on how long steps took on a busy machine (the budget's own tests:
    tests/test_speculative_budget.py)."""
    import sazanami.engine.loop as engine_module

    monkeypatch.setattr(engine_module, "budget", lambda drafts, alphas, ratio, explore=False: drafts)


@pytest.fixture(scope="session")
def tiny_engine() -> Engine:
    return Engine(models.load("tiny-random"))


@pytest.fixture(scope="session")
def real_engine() -> Engine:
    return Engine(models.load(models.DEFAULT_MODEL))


@pytest.fixture(scope="module")
def app_url(tiny_engine: Engine) -> Iterator[str]:
    """The server's URL (tiny random model, at most 64 tokens), one server per test module."""
    from sazanami.server import Limits, create_app
    from sazanami.server.testing import serving

    with serving(create_app("tiny-random", Limits(max_tokens=64), engine=tiny_engine)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's ``chromium``, headless, driven by Playwright for Python (no ``playwright install``),
    one per test module; the module's tests skip without either."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs: pip install playwright")
    chromium = shutil.which("chromium")
    if not chromium:
        pytest.skip("the browser test needs Debian's chromium: apt-get install -y chromium chromium-driver")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
