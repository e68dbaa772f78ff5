"""Shared fixtures: the tiny random model (seconds) and the embedded model (real)."""

from __future__ import annotations

import pytest

from sazanami import models
from sazanami.engine import Engine


@pytest.fixture(scope="session")
def tiny_engine() -> Engine:
    return Engine(models.load("tiny-random"))


@pytest.fixture(scope="session")
def real_engine() -> Engine:
    return Engine(models.load(models.DEFAULT_MODEL))
