"""vLLM as a sazanami engine: vLLM runs the model and the batch, sazanami's noise enters as a logits processor.

vLLM owns the loop (scheduling, paged KV cache, prefix cache), so this backend is an
:class:`~sazanami.engine.Engine` whose :meth:`VllmEngine.steps` hands the rows to
``vllm.LLM.generate`` and replays the tokens that come back through the engine's own
row bookkeeping (stop strings, lengths, ``finish_reason``), so completions look exactly
like the torch backend's.

Rows that need sazanami's sampler (any logits-level fluctuation, or a sampler feature vLLM
lacks: typical-p, dynamic temperature, mirostat, DRY, XTC, top-nσ, logit bias) carry their
settings in ``SamplingParams.extra_args["sazanami"]``. :class:`FluctuationProcessor` (a vLLM
V1 custom logits processor) holds, per such request, a one-row
:class:`~sazanami.sampling.SamplerBatch` built from the row's own parameters, seed and noise
mixture, so the noise is keyed by (seed, stream, step) exactly as in :mod:`sazanami.noise`,
and runs the whole sampler pipeline (bias, penalties, logit noise, fluctuating temperature,
truncation, draw) on the row's logits. Only the token it drew stays finite; the vLLM request
is greedy, so vLLM emits that token. For the colored draw that token is
argmax(logits / T + G) with G colored Gumbel noise, an exact sample; for every row it is the
token the torch backend draws from the same logits and seed.

Other rows are plain vLLM requests: temperature, top-k/top-p/min-p and penalties are vLLM's.

Log-probs are vLLM's ``raw_logprobs`` (before any processing), as the torch backend reports.
What vLLM cannot do here is refused with a :class:`~sazanami.errors.ParameterError` naming
the backend: see :data:`CAPABILITIES`.

The processor implements vLLM's V1 processor interface (``vllm.v1.sample.logits_processor``),
so the engine asks for the V1 model runner (``VLLM_USE_V2_MODEL_RUNNER=0``, the CPU build's
only runner); a port to Model Runner V2's interface is not written yet.

vLLM's offline ``LLM`` starts an engine-core process: create :class:`VllmEngine` under
``if __name__ == "__main__":`` in scripts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from sazanami.backends import Capabilities
from sazanami.engine import Delta, Engine, _Row
from sazanami.errors import ParameterError
from sazanami.params import SamplingParams
from sazanami.rows import Completion, RowRequest
from sazanami.sampling import SamplerBatch
from sazanami.seeds import derive_seed
from sazanami.tokenizer import Tokenizer

# vLLM logs to stdout at INFO (hundreds of lines per start): errors only, unless the user asks.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

try:  # vLLM is optional: the module imports without it, the engine needs it.
    import vllm
    import vllm.platforms
    from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality
except ImportError:  # pragma: no cover - depends on the install
    vllm = None
    LogitsProcessor = object  # type: ignore[assignment,misc]

__all__ = ["CAPABILITIES", "FluctuationProcessor", "VllmEngine", "available", "row_settings"]

EXTRA_KEY = "sazanami"
"""Key of a row's settings in ``vllm.SamplingParams.extra_args``."""


CAPABILITIES = Capabilities("vllm", ("temperature", "logits", "draw"), islands=False, beams=False)
"""Logits-level fluctuations only (vLLM exposes no hidden-state hooks); no islands yet (a tool call
would end the row and continue in a new request, which vLLM's prefix cache makes cheap); no
stochastic beams (they need row copies of the KV cache). Raw forward passes (the log-prob
scorer) are refused too."""


def available() -> bool:
    """Whether vLLM is importable here (it lives in its own venv: ``make vllm``)."""
    return vllm is not None


def _refuse(param: str, what: str) -> ParameterError:
    return ParameterError(param, f"{what} is not available on the vllm backend (see the backends table in the README)")


def check_row(row: RowRequest) -> None:
    """Raise ``ParameterError`` when the vLLM backend cannot run ``row`` as asked."""
    CAPABILITIES.check(row.params.fluctuation)
    if row.params.beams is not None:
        raise _refuse("beams", "stochastic beam search")
    if row.islands is not None:
        raise _refuse("islands", "islands (tool calls and grammars)")


def needs_processor(p: SamplingParams) -> bool:
    """Rows sazanami's sampler must draw (vLLM alone would not draw them the same way)."""
    native = (
        p.fluctuation is None
        and p.typical_p == 1
        and p.dynatemp_range == 0
        and p.mirostat_tau == 0
        and not p.logit_bias
        and p.dry_multiplier == 0
        and p.xtc_probability == 0
        and p.top_n_sigma == 0
    )
    return not native


def row_settings(row: RowRequest, key: str = "") -> dict[str, Any]:
    """The JSON-able settings a row's sampler is built from (``extra_args["sazanami"]``);
    ``key`` names the request, so its sampler survives a preemption."""
    return {
        "key": key,
        "params": row.params.to_dict(),
        "seed": row.seed,
        "noise": [list(m) for m in row.noise] if row.noise else None,
    }


def vllm_params(row: RowRequest, key: str = "") -> Any:
    """The ``vllm.SamplingParams`` of one row (the processor's settings in ``extra_args``)."""
    p = row.params
    common: dict[str, Any] = dict(
        max_tokens=p.max_tokens,
        stop=list(p.stop) or None,
        ignore_eos=p.ignore_eos,
        seed=derive_seed(row.seed, "draw"),
        logprobs=0,
    )
    if not needs_processor(p):
        return vllm.SamplingParams(
            temperature=p.temperature,
            top_k=p.top_k,
            top_p=p.top_p,
            min_p=p.min_p,
            repetition_penalty=p.repetition_penalty,
            presence_penalty=p.presence_penalty,
            frequency_penalty=p.frequency_penalty,
            **common,
        )
    # sazanami's sampler draws the token; vLLM takes the only finite one (greedy).
    return vllm.SamplingParams(temperature=0.0, extra_args={EXTRA_KEY: row_settings(row, key)}, **common)


class RowProcessor:
    """sazanami's sampler for one vLLM request: a one-row :class:`SamplerBatch`.

    Keeps state (noise, penalty counts, mirostat μ); changes the argmax: its output keeps only
    the drawn token finite. ``step`` counts the tokens drawn; a second call for the same output
    length (a discarded chunked-prefill sample) returns the same token without drawing again.
    """

    def __init__(self, settings: dict[str, Any], prompt_ids: list[int] | None, output_ids: list[int]) -> None:
        noise = [(int(s), float(w)) for s, w in settings["noise"]] if settings.get("noise") else None
        self.row = RowRequest(list(prompt_ids or []), SamplingParams.from_dict(settings["params"]), int(settings["seed"]), noise=noise)
        self.output_ids = output_ids  # vLLM's live list of this request's output tokens
        self.sampler: SamplerBatch | None = None
        self.step = 0
        self.token = -1

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """The row's logits (V,) → logits with only the drawn token finite (a new tensor)."""
        n = len(self.output_ids)
        if n == self.step:
            if self.sampler is None:
                self.sampler = SamplerBatch([self.row], logits.shape[-1])
            self.token = int(self.sampler.sample(logits[None].float())[0][0])
            self.step = n + 1
        elif n != self.step - 1:
            raise RuntimeError(f"sazanami row at output length {n} but its sampler drew {self.step} tokens")
        picked = torch.full_like(logits, float("-inf"))
        picked[self.token] = 0.0
        return picked


class FluctuationProcessor(LogitsProcessor):  # type: ignore[misc,valid-type]
    """vLLM V1 custom logits processor: a :class:`RowProcessor` per request that carries
    ``extra_args["sazanami"]``, kept at that request's batch index as vLLM adds, removes and
    moves rows. A removed request's sampler is kept by its key for a while: a preempted request
    comes back with the same key and continues with it."""

    KEEP = 4096
    """Removed requests' samplers kept (a preempted request resumes with its own)."""

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self.rows: dict[int, RowProcessor] = {}
        self.parked: dict[str, RowProcessor] = {}

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        settings = (sampling_params.extra_args or {}).get(EXTRA_KEY)
        if settings is None:
            return
        try:
            SamplingParams.from_dict(settings["params"])
            int(settings["seed"])
        except (KeyError, TypeError, ParameterError) as exc:
            raise ValueError(f"invalid extra_args[{EXTRA_KEY!r}]: {exc}") from exc

    def is_argmax_invariant(self) -> bool:
        return False

    def _park(self, row: RowProcessor | None, key: str) -> None:
        if row is not None and key:
            self.parked[key] = row
            while len(self.parked) > self.KEEP:
                self.parked.pop(next(iter(self.parked)))

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        for index in batch_update.removed:
            row = self.rows.pop(index, None)
            self._park(row, getattr(row, "key", ""))
        for index, params, prompt_ids, output_ids in batch_update.added:
            settings = (params.extra_args or {}).get(EXTRA_KEY) if params is not None else None
            if settings is None:
                self.rows.pop(index, None)
                continue
            key = settings.get("key", "")
            row = self.parked.pop(key, None) if key else None
            if row is None:
                row = RowProcessor(settings, prompt_ids, output_ids)
                row.key = key  # type: ignore[attr-defined]
            row.output_ids = output_ids
            self.rows[index] = row
        for a, b, direction in batch_update.moved:
            row_a, row_b = self.rows.pop(a, None), self.rows.pop(b, None)
            if row_a is not None:
                self.rows[b] = row_a
            if direction == MoveDirectionality.SWAP and row_b is not None:
                self.rows[a] = row_b

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        for index, row in self.rows.items():
            if index < logits.shape[0]:
                logits[index] = row(logits[index].cpu()).to(logits.device, logits.dtype)
        return logits


def model_dir(model: str) -> Path:
    """The Hugging Face directory vLLM loads: the embedded model's cached conversion, or a path."""
    from sazanami.models import DEFAULT_MODEL, embedded_dir

    if model == DEFAULT_MODEL:
        return embedded_dir()
    path = Path(model).expanduser()
    if not (path / "config.json").exists():
        raise ParameterError(
            "model", f"the vllm backend needs {DEFAULT_MODEL} or a Hugging Face directory, got {model!r}"
        )
    return path


class _VllmBackend:
    """What :class:`~sazanami.engine.Engine` reads from a backend; the forward pass is vLLM's own."""

    def __init__(self, name: str, tokenizer: Tokenizer, vocab_size: int, max_positions: int) -> None:
        self.name = name
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.max_positions = max_positions
        self.hidden_size = 0
        self.num_layers = 0
        self.capabilities = CAPABILITIES
        self.supports_prefix_cache = False  # vLLM keeps its own

    def new_cache(self, batch: int, capacity: int) -> Any:
        raise _refuse("backend", "a raw forward pass (re-scoring with LogprobScorer(engine))")

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise _refuse("backend", "a raw forward pass (re-scoring with LogprobScorer(engine))")


class VllmEngine(Engine):
    """An :class:`~sazanami.engine.Engine` whose rows run on vLLM (see the module docstring).

    ``model``: ``smollm2-135m`` (the embedded model's cached safetensors) or a Hugging Face
    directory. ``llm_options`` go to ``vllm.LLM`` (``max_model_len``, ``max_num_seqs``,
    ``gpu_memory_utilization`` …). On CPU, ``kv_cache_gib`` sets ``VLLM_CPU_KVCACHE_SPACE``.
    """

    def __init__(self, model: str = "smollm2-135m", kv_cache_gib: int = 1, **llm_options: Any) -> None:
        if vllm is None:
            raise ParameterError("backend", "the vllm backend needs vLLM: build its venv with `make vllm`")
        path = model_dir(model)
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
        # The processor implements the V1 interface; where vLLM would pick Model Runner V2 (GPUs
        # with Triton) and its different processor interface, ask for the V1 runner.
        os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
        options: dict[str, Any] = {"max_model_len": 2048, "seed": 0, "logits_processors": [FluctuationProcessor]}
        if vllm.platforms.current_platform.is_cpu():
            options["enforce_eager"] = True  # torch.compile's warm-up takes minutes on a small CPU
        options |= llm_options
        self.llm = vllm.LLM(model=str(path), **options)
        config = self.llm.llm_engine.model_config
        backend = _VllmBackend(model, Tokenizer.from_dir(path), config.get_vocab_size(), config.max_model_len)
        self._calls = 0
        super().__init__(backend, prefix_cache=False)  # vLLM keeps its own prefix cache

    def steps(self, requests: list[RowRequest], out: list[Completion], deltas: bool = True) -> Iterator[list[Delta]]:
        """All rows in one ``LLM.generate`` call; yields one list of deltas (the whole texts)."""
        from vllm.inputs import TokensPrompt

        for r in requests:
            check_row(r)
            if len(r.prompt_ids) >= self.max_positions:
                raise ParameterError(
                    "prompt", f"prompt has {len(r.prompt_ids)} tokens; the model's context is {self.max_positions}"
                )
        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r in requests]
        self._calls += 1
        keys = [f"{id(self)}.{self._calls}.{i}" for i in range(len(requests))]  # a preempted row finds its sampler
        results = self.llm.generate(prompts, [vllm_params(r, k) for r, k in zip(requests, keys)], use_tqdm=False)
        eos = set(self.tokenizer.eos_token_ids)
        rows = [_Row(r, self.tokenizer) for r in requests]
        for row, result in zip(rows, results):
            gen = result.outputs[0]
            logprobs = [lp[t].logprob if lp and t in lp else 0.0 for t, lp in zip(gen.token_ids, gen.logprobs or [])]
            # Replay through the engine's row: the same stop, length and finish rules as the torch backend.
            for i, token in enumerate(gen.token_ids):
                row.push(int(token), float(logprobs[i]) if i < len(logprobs) else 0.0, int(token) in eos)
                if row.finish_reason is None and len(row.req.prompt_ids) + i + 1 >= self.max_positions:
                    row.finish_reason = "length"
                if row.finish_reason is not None:
                    break
            if row.finish_reason is None:
                row.finish_reason = "stop" if gen.finish_reason == "stop" else "length"
        if deltas:
            yield [Delta(b, row.delta(), None, True, row.finish_reason) for b, row in enumerate(rows)]
        out.extend(row.completion() for row in rows)
