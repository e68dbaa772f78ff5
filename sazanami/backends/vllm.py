"""vLLM as a sazanami engine: vLLM runs the model and the batch, sazanami's noise enters as a logits processor.

vLLM owns the loop (scheduling, paged KV cache, prefix cache), so this backend is an
:class:`~sazanami.engine.Engine` whose :meth:`VllmEngine.steps` hands the rows to
``vllm.LLM.generate`` and replays the tokens that come back through the engine's own
row bookkeeping (stop strings, lengths, ``finish_reason``), so completions look exactly
like the torch backend's.

Rows that need sazanami's sampler (any logits-level fluctuation, typical-p or dynamic
temperature) carry their settings in ``SamplingParams.extra_args["sazanami"]``;
:class:`FluctuationProcessor` (a V1 custom logits processor) keeps one noise state per
such request, seeded by the row's seed and stepped by its output length, so the noise is
keyed by (seed, stream, step) exactly as in :mod:`sazanami.noise`. Per step and row it runs
sazanami's pipeline (:mod:`sazanami.sampling`) on that row's logits:

1. penalties (done here, not by vLLM: vLLM's V1 sampler applies its own after custom
   processors, V2 before; doing them here keeps sazanami's order on both);
2. logit fluctuation: colored noise added, σ in units of the row's logit std;
3. temperature: dynamic and/or fluctuating T_t; the row's logits are divided by T_t and
   vLLM is told T = 1 (T0 = 0 stays greedy: vLLM takes the argmax);
4. truncation: top-k → top-p → min-p → typical on logits / T_t (vLLM's are switched off);
5. draw: for a ``draw`` fluctuation the processor draws the token itself (colored Gumbel
   noise added, argmax — an exact sample of softmax(logits / T_t), or the quantile draw)
   and leaves only that token finite; the vLLM request is greedy, so vLLM picks it.
   Otherwise vLLM draws from the processed logits with its own per-request generator.

Other rows (no fluctuation) are plain vLLM requests: temperature, top-k/top-p/min-p and
penalties are vLLM's own.

Log-probs are vLLM's ``raw_logprobs`` (before any processing), as the torch backend reports.
What vLLM cannot do here is refused with a :class:`~sazanami.errors.ParameterError` naming
the backend: see :data:`CAPABILITIES`.

vLLM's offline ``LLM`` starts an engine-core process: create :class:`VllmEngine` under
``if __name__ == "__main__":`` in scripts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sazanami.engine import Completion, Delta, Engine, RowRequest, _Row
from sazanami.errors import ParameterError
from sazanami.fluctuation import FluctuationState
from sazanami.params import SamplingParams
from sazanami.sampling import apply_penalties, dynamic_temperature, truncate
from sazanami.seeds import derive_seed
from sazanami.tokenizer import Tokenizer

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


@dataclass(frozen=True)
class Capabilities:
    """What the vLLM backend runs; anything else is refused with an error naming the backend."""

    backend: str = "vllm"
    fluctuation_points: tuple[str, ...] = ("temperature", "logits", "draw")
    """Logits-level fluctuations only: vLLM exposes no hidden-state hooks."""
    islands: bool = False
    """Tool calls and grammars: not yet (a tool call would end the row and continue in a new request)."""
    beams: bool = False
    """Stochastic beam search needs row copies of the KV cache, which vLLM's API does not offer."""
    mirostat: bool = False
    """Mirostat needs the drawn token's surprise before the next step's truncation."""
    forward: bool = False
    """Raw forward passes (tree search's token expansion, the log-prob scorer)."""


CAPABILITIES = Capabilities()


def available() -> bool:
    """Whether vLLM is importable here (it lives in its own venv: ``make vllm``)."""
    return vllm is not None


def _refuse(param: str, what: str) -> ParameterError:
    return ParameterError(param, f"{what} is not available on the vllm backend (see the backends table in the README)")


def check_row(row: RowRequest) -> None:
    """Raise ``ParameterError`` when the vLLM backend cannot run ``row`` as asked."""
    p = row.params
    fl = p.fluctuation
    if fl is not None:
        for point in fl.active:
            if point not in CAPABILITIES.fluctuation_points:
                raise _refuse(f"fluctuation.{point}", f"{point} noise")
    if getattr(p, "beams", None) is not None:
        raise _refuse("beams", "stochastic beam search")
    if p.mirostat_tau > 0:
        raise _refuse("mirostat_tau", "mirostat")
    if row.islands is not None:
        raise _refuse("islands", "islands (tool calls and grammars)")


def needs_processor(p: SamplingParams) -> bool:
    """Rows whose sampling sazanami's processor must run (vLLM alone would not be the same)."""
    return p.fluctuation is not None or p.typical_p < 1 or p.dynatemp_range > 0


def row_settings(row: RowRequest) -> dict[str, Any]:
    """The JSON-able settings a row's processor state is built from (``extra_args["sazanami"]``)."""
    return {
        "params": row.params.to_dict(),
        "seed": row.seed,
        "noise": [list(m) for m in row.noise] if row.noise else None,
    }


def vllm_params(row: RowRequest) -> Any:
    """The ``vllm.SamplingParams`` of one row (the processor's settings in ``extra_args``)."""
    p = row.params
    common: dict[str, Any] = dict(
        max_tokens=p.max_tokens,
        stop=list(p.stop) or None,
        ignore_eos=p.ignore_eos,
        seed=derive_seed(row.seed, "draw") & (2**63 - 1),
        logprobs=0,
    )
    if not needs_processor(p):
        return vllm.SamplingParams(
            temperature=p.temperature,
            top_k=p.top_k if p.top_k > 0 else 0,
            top_p=p.top_p,
            min_p=p.min_p,
            repetition_penalty=p.repetition_penalty,
            presence_penalty=p.presence_penalty,
            frequency_penalty=p.frequency_penalty,
            **common,
        )
    # The processor runs steps 1-4 (and 5 for draw rows); vLLM only draws or takes the argmax.
    draws = p.fluctuation is not None and p.fluctuation.draw is not None
    temperature = 0.0 if (p.greedy or draws) else 1.0
    return vllm.SamplingParams(temperature=temperature, extra_args={EXTRA_KEY: row_settings(row)}, **common)


class RowProcessor:
    """sazanami's per-step sampler for one vLLM request (steps 1-5 of :mod:`sazanami.sampling`).

    Keeps state (the row's noise sources); can change the argmax. ``step`` counts the output
    tokens the noise has been drawn for: a call for output length ``n`` draws step ``n``,
    whatever happened before (a repeated call — a discarded chunked-prefill sample — redraws
    the same step; a request resumed after preemption skips ahead).
    """

    def __init__(self, settings: dict[str, Any], prompt_ids: list[int] | None, output_ids: list[int]) -> None:
        self.params = SamplingParams.from_dict(settings["params"])
        self.seed = int(settings["seed"])
        self.noise = [(int(s), float(w)) for s, w in settings["noise"]] if settings.get("noise") else None
        self.prompt_ids = list(prompt_ids or [])
        self.output_ids = output_ids  # vLLM's live list of this request's output tokens
        self.state: FluctuationState | None = None
        self.step = 0
        self._snap: list[Any] | None = None

    def _sources(self) -> list[Any]:
        s = self.state
        return [n for n in (s.temp_noise, s.logit_noise, s.draw_noise) if n is not None] if s else []

    def _sync(self, vocab_size: int) -> None:
        """Bring the noise to step ``len(output_ids)`` (see the class docstring)."""
        p, n = self.params, len(self.output_ids)
        if self.state is None:
            fl = p.fluctuation
            self.state = fl.start(self.seed, vocab_size, 0, self.noise) if fl is not None else None
        if n == self.step - 1 and self._snap is not None:  # the same step again
            for src, snap in zip(self._sources(), self._snap):
                src.restore(snap)
            self.step = n
        if n < self.step:  # cannot go back further: start over and skip ahead
            self.state, self.step = None, 0
            self._sync(vocab_size)
            return
        while self.step < n:  # resumed: draw what the missed steps drew
            s = self.state
            if s is not None:
                if s.logit_noise is not None:
                    s.logit_noise.step()
                if s.temp_noise is not None and p.temperature > 0:
                    s.temp_noise.step()
                if s.draw_noise is not None and not p.greedy:
                    s.draw_noise.step()
            self.step += 1
        self._snap = [src.snapshot() for src in self._sources()]
        self.step = n + 1

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """Steps 1-5 on one row's logits (V,); returns new logits for vLLM to draw from."""
        p, V = self.params, logits.shape[-1]
        self._sync(V)
        fs = self.state
        x = logits[None].float()  # (1, V)
        one = torch.ones(1)
        # 1. penalties (sazanami's semantics: repetition on prompt + output, presence/frequency on output)
        if p.repetition_penalty != 1 or p.presence_penalty or p.frequency_penalty:
            out = torch.tensor(self.output_ids, dtype=torch.long)
            counts = torch.bincount(out[out < V], minlength=V)[None].float()
            seen = counts > 0
            prompt = torch.tensor([t for t in self.prompt_ids if t < V], dtype=torch.long)
            seen[0, prompt] = True
            x = apply_penalties(
                x, counts, seen, one * p.repetition_penalty, one * p.presence_penalty, one * p.frequency_penalty
            )
        # 2. logit fluctuation
        if fs is not None:
            x = fs.perturb_logits(x[0])[None]
        # 3. temperature
        temp = p.temperature
        if p.dynatemp_range > 0:
            temp = float(dynamic_temperature(x, one * temp, one * p.dynatemp_range, one * p.dynatemp_exponent)[0])
        if fs is not None:
            temp = fs.temperature(temp)
        if temp <= 0:
            return x[0]  # greedy: vLLM takes the argmax
        # 4. truncation on logits / T
        x = truncate(
            x / temp,
            torch.tensor([p.top_k]),
            one * p.top_p,
            one * p.min_p,
            one * p.typical_p,
        )
        # 5. the colored draw: only the drawn token stays finite; vLLM's greedy pick takes it
        if fs is not None and fs.draws:
            token = fs.draw(x[0])
            picked = torch.full((V,), float("-inf"))
            picked[token] = 0.0
            return picked
        return x[0]


class FluctuationProcessor(LogitsProcessor):  # type: ignore[misc,valid-type]
    """vLLM V1 custom logits processor: a :class:`RowProcessor` per request that carries
    ``extra_args["sazanami"]``, kept at that request's batch index as vLLM adds, removes
    and moves rows. Keeps state; can change the argmax."""

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self.rows: dict[int, RowProcessor] = {}

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

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        for index in batch_update.removed:
            self.rows.pop(index, None)
        for index, params, prompt_ids, output_ids in batch_update.added:
            settings = (params.extra_args or {}).get(EXTRA_KEY) if params is not None else None
            if settings is None:
                self.rows.pop(index, None)
            else:
                self.rows[index] = RowProcessor(settings, prompt_ids, output_ids)
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

    def new_cache(self, batch: int, capacity: int) -> Any:
        raise _refuse("backend", "a raw forward pass (tree search, the log-prob scorer)")

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise _refuse("backend", "a raw forward pass (tree search, the log-prob scorer)")


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
        options: dict[str, Any] = {"max_model_len": 2048, "seed": 0, "logits_processors": [FluctuationProcessor]}
        if vllm.platforms.current_platform.is_cpu():
            options["enforce_eager"] = True  # torch.compile's warm-up takes minutes on a small CPU
        options |= llm_options
        self.llm = vllm.LLM(model=str(path), **options)
        config = self.llm.llm_engine.model_config
        backend = _VllmBackend(model, Tokenizer.from_dir(path), config.get_vocab_size(), config.max_model_len)
        super().__init__(backend)

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
        results = self.llm.generate(prompts, [vllm_params(r) for r in requests], use_tqdm=False)
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
