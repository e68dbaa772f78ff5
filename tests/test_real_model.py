"""A few short checks on the embedded SmolLM2-135M-Instruct model."""

from __future__ import annotations

import time

import pytest

from sazanami import models
from sazanami.engine import Engine
from sazanami.params import SamplingParams

pytestmark = pytest.mark.real


def test_loads_from_cache_quickly(real_engine: Engine):
    assert (models.cache_dir() / "models" / models.DEFAULT_MODEL / "model.safetensors").exists()
    t = time.perf_counter()
    models.LlamaBackend.from_dir(models.embedded_dir())
    assert time.perf_counter() - t < 10  # generous: the target (< 2 s) lives in bench/throughput.py


def test_chat_generation_16_tokens(real_engine: Engine):
    out = real_engine.generate("What is the capital of France?", SamplingParams(temperature=0, max_tokens=16))[0]
    assert "Paris" in out.text
    assert 0 < out.completion_tokens <= 16


def test_variants_differ_and_reproduce(real_engine: Engine):
    p = SamplingParams(n=3, seed=42, max_tokens=16, temperature=1.0)
    a = real_engine.generate("Write a sentence about rain.", p)
    b = real_engine.generate("Write a sentence about rain.", p)
    assert [c.text for c in a] == [c.text for c in b]
    assert len({c.text for c in a}) > 1
