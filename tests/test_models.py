"""The default dtype: chosen by a cached one-time measurement, never by CPU flags alone."""

from __future__ import annotations

import json

import pytest

from sazanami import models
from sazanami.errors import ParameterError

BF16_CPU = "model name\t: Test CPU 9000\nflags\t\t: avx512f avx512_bf16\n"


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """A bf16-capable CPU, a temporary cache and a stopwatch that reports given seconds."""
    calls = []
    seconds = {"float32": 1.0, "bfloat16": 2.0}
    monkeypatch.setenv("SAZANAMI_CACHE", str(tmp_path))
    monkeypatch.delenv("SAZANAMI_DTYPE", raising=False)
    monkeypatch.setattr(models, "_cpuinfo", lambda: BF16_CPU)

    def timer(hidden, intermediate, budget_s=0.15):
        calls.append((hidden, intermediate))
        return dict(seconds)

    monkeypatch.setattr(models, "_time_dtypes", timer)
    return calls, seconds, tmp_path


def test_measured_once_and_cached_per_cpu_and_shape(fake):
    calls, seconds, tmp = fake
    assert models.default_dtype(576, 1536) == "float32"  # float32 measured faster at batch 1
    assert models.default_dtype(576, 1536) == "float32" and len(calls) == 1  # cached: not measured again
    doc = json.loads((tmp / "dtype.json").read_text())
    (key,) = doc
    assert "Test CPU 9000" in key and "576x1536" in key and doc[key]["dtype"] == "float32"
    seconds.update(float32=3.0)
    assert models.default_dtype(64, 128) == "bfloat16" and len(calls) == 2  # another shape: measured


def test_no_native_bf16_means_float32_without_measuring(fake, monkeypatch):
    calls, _, _ = fake
    monkeypatch.setattr(models, "_cpuinfo", lambda: "model name\t: Old CPU\nflags\t\t: avx2\n")
    assert models.default_dtype() == "float32" and calls == []


def test_explicit_dtype_skips_the_measurement(fake, monkeypatch):
    calls, _, tmp = fake
    assert models._resolve_dtype("bfloat16", tmp) == "bfloat16"
    monkeypatch.setenv("SAZANAMI_DTYPE", "bfloat16")
    assert models._resolve_dtype("auto", tmp) == "bfloat16" and calls == []
    monkeypatch.setenv("SAZANAMI_DTYPE", "float16")
    with pytest.raises(ParameterError, match="dtype must be one of"):
        models._resolve_dtype("auto", tmp)
    (tmp / "config.json").write_text(json.dumps({"hidden_size": 32, "intermediate_size": 80}))
    monkeypatch.delenv("SAZANAMI_DTYPE")
    assert models._resolve_dtype("auto", tmp) == "float32" and calls == [(32, 80)]  # the model's own shapes


def test_the_micro_benchmark_runs_both_dtypes():
    out = models._time_dtypes(32, 64, budget_s=0.005)
    assert set(out) == {"float32", "bfloat16"} and all(v > 0 for v in out.values())
