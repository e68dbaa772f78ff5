"""vLLM as a sazanami engine: vLLM runs the model and the batch, sazanami's noise enters as a logits processor.

vLLM owns the loop (scheduling, paged KV cache, prefix cache), so this backend is an
:class:`~sazanami.engine.loop.Engine` whose :meth:`VllmEngine.steps` hands the rows to
``vllm.LLM.generate`` and replays the tokens that come back through the engine's own
row step (:class:`~sazanami.engine.decode_step.RowStep`: stop strings, lengths, grammar, tool calls,
``finish_reason``), so completions look exactly like the torch backend's.

Rows that need sazanami's sampler (any logits-level fluctuation, or a sampler feature vLLM
lacks: typical-p, dynamic temperature, mirostat, DRY, XTC, top-nσ, logit bias) carry their
settings in ``SamplingParams.extra_args["sazanami"]``. :class:`FluctuationProcessor` (a vLLM
V1 custom logits processor) holds, per such request, a one-row
:class:`~sazanami.engine.decode_step.RowStep` built from the row's own parameters, seed and noise
mixture (the first half of the engine's row step runs inside vLLM), so the noise is keyed by (seed, stream, step) exactly as in :mod:`sazanami.noise.colored`,
and runs the whole sampler pipeline (bias, penalties, logit noise, fluctuating temperature,
truncation, draw) on the row's logits. Only the token it drew stays finite; the vLLM request
is greedy, so vLLM emits that token. For the colored draw that token is
argmax(logits / T + G) with G colored Gumbel noise, an exact sample; for every row it is the
token the torch backend draws from the same logits and seed.

Other rows are plain vLLM requests: temperature, top-k/top-p/min-p and penalties are vLLM's.

Islands run in the processor around the row's sampler, in the engine loop's order: a grammar
masks the logits and takes the drawn token; a tool call ends the vLLM request at the call: the
processor watches the row's text with the engine's own call watcher, ends the call's text at
its closing bracket (as the torch backend trims it) and then forces a stop token without
drawing (as it does when the grammar is complete); :class:`VllmEngine` runs the tool and sends
a continuation request whose prompt is the prompt, the row's tokens and the result (vLLM's
prefix cache makes that prefix cheap). The continuation takes over the finished request's
sampler and grammar, so the noise streams, the draw's generator, penalty counts and
mirostat's μ go on at the step they reached: a row's draws are those of the torch backend for
the same logits.

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

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from sazanami.backends import Capabilities
from sazanami.backends.tokenizer import Tokenizer
from sazanami.engine.decode_step import RowState, RowStep
from sazanami.engine.loop import Delta, Engine
from sazanami.errors import ParameterError
from sazanami.islands.constraints import Constraint
from sazanami.islands.runtime import Islands
from sazanami.islands.tools import CallSyntax, Tool, ToolRegistry
from sazanami.sampling.params import SamplingParams
from sazanami.sampling.rows import Completion, RowRequest
from sazanami.seeds import derive_seed

# vLLM logs to stdout at INFO (hundreds of lines per start): errors only, unless the user asks.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

try:  # vLLM is optional: the module imports without it, the engine needs it.
    import vllm
    import vllm.platforms
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality
except ImportError:  # pragma: no cover - depends on the install
    vllm = None
    LogitsProcessor = object  # type: ignore[assignment,misc]

__all__ = ["CAPABILITIES", "FluctuationProcessor", "VllmEngine", "available", "row_settings"]

EXTRA_KEY = "sazanami"
"""Key of a row's settings in ``vllm.SamplingParams.extra_args``."""


CAPABILITIES = Capabilities("vllm", ("temperature", "logits", "draw"), islands=True, beams=False)
"""Logits-level fluctuations only (vLLM exposes no hidden-state hooks); islands in the processor
(a tool call ends the request and a continuation request goes on after the result; grammar
masks are applied before sazanami's sampler, as on torch); no stochastic beams (they need row
copies of the KV cache). Raw forward passes (the log-prob scorer) are refused too."""


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
    if row.params.speculative is not None:
        raise _refuse("speculative", "sazanami's speculative decoding (vLLM has its own: its speculative_config)")


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


def has_islands(row: RowRequest) -> bool:
    """Whether the row has tools (its requests end at each call) or a grammar (masks in the processor)."""
    return row.islands is not None and row.islands.active


def row_settings(row: RowRequest, key: str = "", stop_token: int = -1, resume: str = "") -> dict[str, Any]:
    """The JSON-able settings a row's sampler is built from (``extra_args["sazanami"]``).

    ``key`` names the request, so its sampler survives a preemption; ``resume`` names the
    finished request whose sampler a continuation takes over. A row with islands carries what
    the processor's call watcher and grammar need (never the tools themselves) and
    ``stop_token``, the token it forces to end the request at a call or a complete grammar.
    """
    out: dict[str, Any] = {
        "key": key,
        "params": row.params.to_dict(),
        "seed": row.seed,
        "noise": [list(m) for m in row.noise] if row.noise else None,
        "lead": row.lead,
        "resume": resume,
    }
    if has_islands(row):
        isl = row.islands
        out["islands"] = {
            "tools": isl.tools.names if isl.tools is not None else [],
            "constraint": isl.constraint.to_dict() if isl.constraint is not None else None,
            "prefix": list(isl.prefix),
            "syntax": dataclasses.asdict(isl.syntax),
            "max_calls": isl.max_calls,
            "calls_made": isl.calls_made,
            "lead": isl.lead,
            "stop_token": stop_token,
        }
    return out


def _runs_elsewhere(*args: Any) -> None:
    raise RuntimeError("tools run in the engine's process, not in vLLM's")


def watched_islands(spec: dict[str, Any]) -> Islands:
    """The islands a processor row follows: the tools' names, the call syntax and the grammar (no tool runs here)."""
    tools = ToolRegistry() if spec["tools"] else None
    for name in spec["tools"]:
        tools.add(Tool(name, _runs_elsewhere, ""))  # type: ignore[union-attr]
    constraint = Constraint.from_dict(spec["constraint"]) if spec.get("constraint") else None
    return Islands(
        tools=tools, constraint=constraint, syntax=CallSyntax(**spec["syntax"]), max_calls=int(spec["max_calls"]),
        calls_made=int(spec["calls_made"]), lead=str(spec["lead"]), prefix=tuple(spec.get("prefix") or ()),
    )  # fmt: skip


def vllm_params(
    row: RowRequest,
    key: str = "",
    stop_token: int = -1,
    resume: str = "",
    max_tokens: int | None = None,
    stream: bool = False,
) -> Any:
    """The ``vllm.SamplingParams`` of one row (the processor's settings in ``extra_args``).

    A continuation (``resume``: the key of the request it follows) asks for the ``max_tokens``
    the row has left. ``stream``: vLLM reports each step's new tokens (else only the end).
    """
    p = row.params
    common: dict[str, Any] = dict(
        max_tokens=p.max_tokens if max_tokens is None else max_tokens,
        stop=list(p.stop) or None,
        ignore_eos=p.ignore_eos,
        seed=derive_seed(row.seed, "draw"),
        logprobs=0,
        output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY,
    )
    islands = has_islands(row)
    if islands:
        common["stop_token_ids"] = [stop_token]  # forced by the processor at a call or a complete grammar
    if not islands and not needs_processor(p):
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
    settings = row_settings(row, key, stop_token, resume)
    return vllm.SamplingParams(temperature=0.0, extra_args={EXTRA_KEY: settings}, **common)


class RowProcessor:
    """sazanami's sampler for one vLLM request: a one-row :class:`~sazanami.engine.decode_step.RowStep`.

    Keeps state (noise, penalty counts, mirostat μ); changes the argmax: its output keeps only
    the drawn token finite. ``position`` counts the positions of the current request it chose a
    token for; a second call for the same output length (a discarded chunked-prefill sample)
    returns the same token without drawing again.

    It runs the row step's first half (:meth:`RowStep.choose <sazanami.engine.decode_step.RowStep.choose>`:
    grammar mask, sampler, guard) and, given a tokenizer, lets the row take the token
    (:meth:`RowStep.take <sazanami.engine.decode_step.RowStep.take>`: its text, DRY's context, its grammar,
    which may end the row); a complete call ends the text at the call (the torch backend's
    trim). Once the row ended so, the processor forces ``stop_token`` without drawing, which
    ends the request. :meth:`resume` hands the step (sampler and grammar) to the continuation
    request that follows a call's result.
    """

    def __init__(
        self, settings: dict[str, Any], prompt_ids: list[int] | None, output_ids: list[int], tokenizer: Any = None
    ) -> None:
        noise = [(int(s), float(w)) for s, w in settings["noise"]] if settings.get("noise") else None
        params = SamplingParams.from_dict(settings["params"])
        prompt = list(prompt_ids or [])
        self.row = RowRequest(prompt, params, int(settings["seed"]), noise=noise, lead=settings.get("lead") or "")
        self.output_ids = output_ids  # vLLM's live list of this request's output tokens
        self.tokenizer = tokenizer
        self.step: RowStep | None = None  # built at the first logits (their width is the vocabulary)
        self.position = 0
        self.token = -1
        self.key = str(settings.get("key") or "")
        self.stopping = False
        self.stop_token = -1
        if settings.get("islands"):
            if tokenizer is None:
                raise ValueError("a row with islands needs the tokenizer")
            spec = settings["islands"]
            self.row.islands = watched_islands(spec)
            self.stop_token = int(spec["stop_token"])

    @property
    def text(self) -> RowState | None:
        """The row as the engine sees it (drawn and injected tokens), for a row with islands."""
        return self.step.rows[0] if self.step is not None and self.row.islands is not None else None

    def resume(self, prompt_ids: list[int], output_ids: list[int]) -> None:
        """Go on in a continuation request: its prompt is this row's prompt, its tokens and the
        injected result, which the row's text takes in; the sampler continues where it stopped."""
        self.output_ids = output_ids
        self.position, self.token, self.stopping = 0, -1, False
        text = self.text
        calls = self.step.islands if self.step is not None else None
        if text is not None and calls is not None:
            injected = list(prompt_ids[len(self.row.prompt_ids) + len(text.tokens) :])
            if injected and calls.watchers[0] is not None:
                text.inject(injected, {"kind": "tool"})
                calls.watchers[0].settle(len(text.text))  # type: ignore[union-attr]

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """The row's logits (V,) → logits with only the chosen token finite (a new tensor)."""
        n = len(self.output_ids)
        if n == self.position:
            self.position = n + 1
            self.token = self.stop_token if self.stopping else self._draw(logits.float())
        elif n != self.position - 1:
            raise RuntimeError(f"sazanami row at output length {n} but its sampler drew {self.position} tokens")
        picked = torch.full_like(logits, float("-inf"))
        picked[self.token] = 0.0
        return picked

    def _draw(self, logits: torch.Tensor) -> int:
        """One row step as far as vLLM's process goes: mask, sampler, guard; the row takes the
        token (its grammar may end it); a complete call ends the row (its closing text possibly
        trimmed). vLLM reports the log-probs, so the row's own are not computed."""
        if self.step is None:
            self.step = RowStep([self.row], self.tokenizer, logits.shape[-1])
        step = self.step
        token = int(step.choose(logits[None])[0][0])
        if self.tokenizer is None:
            return token  # nothing reads the row's text (no islands, no DRY)
        step.take([token], [0.0])
        text, calls = step.rows[0], step.islands
        if calls is None:
            return token
        if calls.due([text], logits[None]):
            token = text.tokens[-1]  # the call's closing text, possibly trimmed
            self.stopping = True  # the next position gets the stop token: the request ends at the call
        elif text.finish_reason is not None:
            self.stopping = True  # ended (a complete grammar, a sazanami end-of-sequence id): end the request too
        return token


class FluctuationProcessor(LogitsProcessor):  # type: ignore[misc,valid-type]
    """vLLM V1 custom logits processor: a :class:`RowProcessor` per request that carries
    ``extra_args["sazanami"]``, kept at that request's batch index as vLLM adds, removes and
    moves rows. A removed request's sampler is kept by its key for a while: a preempted request
    comes back with the same key and continues with it, a continuation request names it in
    ``resume`` and takes it over."""

    KEEP = 4096
    """Removed requests' samplers kept (a preempted request resumes with its own)."""

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self.rows: dict[int, RowProcessor] = {}
        self.parked: dict[str, RowProcessor] = {}
        self._tokenizer_dir = getattr(getattr(vllm_config, "model_config", None), "tokenizer", None)
        self._tokenizer: Tokenizer | None = None

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

    def _tokenizer_for(self, settings: dict[str, Any]) -> Tokenizer | None:
        """The model's tokenizer, loaded once, for rows that need it (tool calls, DRY's breakers)."""
        if (
            self._tokenizer is None
            and self._tokenizer_dir
            and (settings.get("islands") or settings["params"].get("dry_multiplier"))
        ):
            self._tokenizer = Tokenizer.from_dir(self._tokenizer_dir)
        return self._tokenizer

    def _park(self, row: RowProcessor | None) -> None:
        if row is not None and row.key:
            self.parked[row.key] = row
            while len(self.parked) > self.KEEP:
                self.parked.pop(next(iter(self.parked)))

    def _row(self, settings: dict[str, Any], prompt_ids: list[int] | None, output_ids: list[int]) -> RowProcessor:
        """The sampler of a request vLLM adds: its own (back from a preemption), the one it
        continues, or a new one."""
        key, resume = settings.get("key", ""), settings.get("resume", "")
        row = self.parked.pop(key, None) if key else None
        if row is not None:
            row.output_ids = output_ids
            return row
        if resume:
            row = self.parked.pop(resume, None)
            if row is None:
                raise RuntimeError(f"sazanami continuation {key!r}: the sampler of {resume!r} is gone")
            row.resume(list(prompt_ids or []), output_ids)
            row.key = key
            return row
        return RowProcessor(settings, prompt_ids, output_ids, self._tokenizer_for(settings))

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        for index in batch_update.removed:
            self._park(self.rows.pop(index, None))
        for index, params, prompt_ids, output_ids in batch_update.added:
            # vLLM reuses a removed request's index without listing it in ``removed``
            self._park(self.rows.pop(index, None))
            settings = (params.extra_args or {}).get(EXTRA_KEY) if params is not None else None
            if settings is None:
                continue
            self.rows[index] = self._row(settings, prompt_ids, output_ids)
        for a, b, direction in batch_update.moved:
            row_a, row_b = self.rows.pop(a, None), self.rows.pop(b, None)
            if row_a is not None:
                self.rows[b] = row_a
            if direction == MoveDirectionality.SWAP and row_b is not None:
                self.rows[a] = row_b
            elif direction != MoveDirectionality.SWAP:
                self._park(row_b)  # a removed request's index, filled without being listed in ``removed``

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


def kv_bytes_per_token(hf_config: Any, dtype: torch.dtype) -> int:
    """Bytes of keys and values one position takes: every layer's KV heads in ``dtype``."""
    heads = hf_config.num_attention_heads
    kv_heads = getattr(hf_config, "num_key_value_heads", None) or heads
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
    return hf_config.num_hidden_layers * 2 * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()


class _VllmBackend:
    """What :class:`~sazanami.engine.loop.Engine` reads from a backend; the forward pass is vLLM's own."""

    def __init__(
        self, name: str, tokenizer: Tokenizer, vocab_size: int, max_positions: int, kv_bytes_per_token: int
    ) -> None:
        self.name = name
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.max_positions = max_positions
        self.kv_bytes_per_token = kv_bytes_per_token
        """In vLLM's own (preallocated) cache; the server's memory admission counts it."""
        self.hidden_size = 0
        self.num_layers = 0
        self.capabilities = CAPABILITIES
        self.supports_prefix_cache = False  # vLLM keeps its own

    def new_cache(self, batch: int, capacity: int) -> Any:
        raise _refuse("backend", "a raw forward pass (re-scoring with LogprobScorer(engine))")

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise _refuse("backend", "a raw forward pass (re-scoring with LogprobScorer(engine))")


class VllmEngine(Engine):
    """An :class:`~sazanami.engine.loop.Engine` whose rows run on vLLM (see the module docstring).

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
        options: dict[str, Any] = {
            "max_model_len": 2048, "seed": 0, "logits_processors": [FluctuationProcessor],
            "enable_prefix_caching": True,  # a tool call's continuation request starts with the row's whole prefix
        }  # fmt: skip
        if vllm.platforms.current_platform.is_cpu():
            options["enforce_eager"] = True  # torch.compile's warm-up takes minutes on a small CPU
        options |= llm_options
        self.llm = vllm.LLM(model=str(path), **options)
        config = self.llm.llm_engine.model_config
        kv = kv_bytes_per_token(config.hf_text_config, config.dtype)
        backend = _VllmBackend(model, Tokenizer.from_dir(path), config.get_vocab_size(), config.max_model_len, kv)
        self._calls = 0
        super().__init__(backend, prefix_cache=False)  # vLLM keeps its own prefix cache

    def steps(self, requests: list[RowRequest], out: list[Completion], deltas: bool = True) -> Iterator[list[Delta]]:
        """All rows on vLLM's engine at once; with ``deltas``, yields each step's new text per row.

        A row that calls tools ends its request at each call; the call runs here and the row
        goes on in a continuation request (prompt + the row's tokens + the result) that takes
        over its sampler, while the other rows keep running.
        """
        for r in requests:
            check_row(r)
            if len(r.prompt_ids) >= self.max_positions:
                raise ParameterError(
                    "prompt", f"prompt has {len(r.prompt_ids)} tokens; the model's context is {self.max_positions}"
                )
        self._calls += 1
        stop_token = min(self.tokenizer.eos_token_ids, default=0)  # what the processor forces at a call
        # each row's step replays the tokens vLLM returns (stop strings, lengths, grammar, tool calls)
        vocab = self.backend.vocab_size
        row_steps = [
            RowStep([r], self.tokenizer, vocab, max_positions=self.max_positions, draws=False) for r in requests
        ]
        rows = [s.rows[0] for s in row_steps]
        engine = self.llm.llm_engine
        running: dict[str, int] = {}  # request id → row
        called = [False] * len(rows)  # the request's call was answered: what it still sends is the forced stop
        last = [-1] * len(rows)  # the request's last token

        def submit(b: int, part: int, resume: str = "") -> None:
            row = rows[b]
            key = f"sazanami-{id(self)}.{self._calls}.{b}.{part}"  # a preempted request finds its sampler
            left = row.req.params.max_tokens - row.drawn
            prompt = {"prompt_token_ids": row.req.prompt_ids + row.tokens}
            engine.add_request(key, prompt, vllm_params(row.req, key, stop_token, resume, left, stream=deltas))
            running[key] = b
            called[b], last[b] = False, -1

        for b in range(len(rows)):
            submit(b, 0)
        parts = [0] * len(rows)
        announced = [False] * len(rows)  # the row's finishing delta was sent
        try:
            while engine.has_unfinished_requests():
                changed: dict[int, None] = {}
                for result in engine.step():
                    b = running.get(result.request_id, -1)
                    if b < 0:
                        continue
                    gen = result.outputs[0]
                    if parts[b] == 0:  # the row's own prompt: what vLLM's prefix cache served of it
                        cached = getattr(result, "num_cached_tokens", None) or 0
                        rows[b].cached = max(rows[b].cached, min(int(cached), len(rows[b].req.prompt_ids)))
                    called[b] = self._feed(row_steps[b], gen, called[b])
                    last[b] = int(gen.token_ids[-1]) if gen.token_ids else last[b]
                    changed[b] = None
                    if not result.finished:
                        continue
                    del running[result.request_id]
                    if self._goes_on(rows[b], gen, called[b], last[b] == stop_token):
                        parts[b] += 1
                        submit(b, parts[b], resume=result.request_id)
                if deltas and changed:
                    batch = []
                    for b in changed:
                        if announced[b]:
                            continue  # a row that ended on its own (a stop string) while its request ran on
                        done = rows[b].finish_reason is not None
                        announced[b] = done
                        batch.append(Delta(b, rows[b].delta(), None, done, rows[b].finish_reason, rows[b].cached))
                    if batch:
                        yield batch
        finally:
            if running:  # an error (or a closed generator) left requests behind: do not leave them running
                engine.abort_request(list(running))
        if deltas:
            ends = [
                Delta(b, row.delta(), None, True, row.finish_reason, row.cached)
                for b, row in enumerate(rows)
                if not announced[b]
            ]
            if ends:
                yield ends
        out.extend(row.completion() for row in rows)

    def _feed(self, step: RowStep, gen: Any, called: bool) -> bool:
        """Take a request's new tokens into the row's step (the torch backend's stop, length,
        grammar and finish rules); True once a tool call in them was answered (the row goes on in
        a continuation request; the request's remaining token is the stop the processor forced)."""
        row = step.rows[0]
        logprobs = [lp[t].logprob if lp and t in lp else 0.0 for t, lp in zip(gen.token_ids, gen.logprobs or [])]
        for i, token in enumerate(gen.token_ids):
            if called or row.finish_reason is not None:
                break
            pos = len(row.req.prompt_ids) + len(row.tokens)  # where the token goes
            # vLLM counts the drawn token itself against its context (prompt + output ≤ max_model_len)
            step.take([int(token)], [float(logprobs[i]) if i < len(logprobs) else 0.0], positions=[pos + 1])
            if row.finish_reason is None and step.inject(None, [pos]):
                called = True  # the processor ended the text at the call
        return called

    @staticmethod
    def _goes_on(row: RowState, gen: Any, called: bool, ended_on_stop: bool) -> bool:
        """At the end of a row's request: True when the row goes on in a continuation request (a
        tool call was answered, or a row that ignores end-of-sequence drew the stop token)."""
        if row.finish_reason is not None:
            return False
        if called or (has_islands(row.req) and ended_on_stop):
            return True
        row.finish_reason = "stop" if gen.finish_reason == "stop" else "length"
        return False
