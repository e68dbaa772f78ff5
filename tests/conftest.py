"""Shared fixtures: the tiny random model (seconds) and the embedded model (real)."""

from __future__ import annotations

import os

import pytest

from sazanami import models
from sazanami.engine import Engine

# `--backend auto` never measures in tests: llama.cpp for one row, torch for more
os.environ[models.AUTO_ROWS_ENV] = "2"


@pytest.fixture(scope="session")
def tiny_engine() -> Engine:
    return Engine(models.load("tiny-random"))


@pytest.fixture(scope="session")
def real_engine() -> Engine:
    return Engine(models.load(models.DEFAULT_MODEL))
