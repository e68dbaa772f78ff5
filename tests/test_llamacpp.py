"""The llama.cpp backend: sequence bookkeeping on a fake library, then the embedded GGUF for real."""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import struct
from functools import partial
from types import SimpleNamespace

import pytest
import torch

from sazanami import models
from sazanami.backends.llamacpp_cache import MAX_SEQUENCES, SeqCache, SequencePool
from sazanami.engine.loop import Engine
from sazanami.engine.prefix_cache import PrefixCache
from sazanami.errors import ModelNotFoundError, ParameterError
from sazanami.sampling.params import SamplingParams

# -- bookkeeping, on a fake of llama.cpp's memory API (no bindings needed) --------------------


class FakeLib:
    """llama.cpp's sequence/memory calls over a dict {ctx: {seq: set of positions}}, one stream
    per sequence; states are laid out as llama.cpp's (header, stream count, a count per stream)."""

    def __init__(self) -> None:
        self.contexts: list[SimpleNamespace] = []
        self.copies = 0

    def llama_context_default_params(self) -> SimpleNamespace:
        return SimpleNamespace()

    def llama_init_from_model(self, model: object, p: SimpleNamespace) -> SimpleNamespace:
        ctx = SimpleNamespace(n_ctx=p.n_ctx, n_seq=p.n_seq_max, kv={}, freed=False, unified=p.kv_unified)
        self.contexts.append(ctx)
        return ctx

    def llama_get_memory(self, ctx: SimpleNamespace) -> SimpleNamespace:
        return ctx

    def llama_free(self, ctx: SimpleNamespace) -> None:
        ctx.freed = True

    def llama_memory_seq_rm(self, mem: SimpleNamespace, s: int, p0: int, p1: int) -> bool:
        hi = p1 if p1 >= 0 else 1 << 30
        mem.kv[s] = {p for p in mem.kv.get(s, ()) if not max(p0, 0) <= p < hi}
        if not mem.kv[s]:
            del mem.kv[s]
        return True

    def llama_state_seq_get_size(self, ctx: SimpleNamespace, s: int) -> int:
        return 12 + 4 * ctx.n_seq + 4 * len(ctx.kv.get(s, ()))

    def llama_state_seq_get_data(self, ctx: SimpleNamespace, buf: ctypes.Array, size: int, s: int) -> int:
        pos = sorted(ctx.kv.get(s, ()))
        counts = [len(pos) if i == s else 0 for i in range(ctx.n_seq)]
        data = (
            bytes(8)
            + struct.pack("<I", ctx.n_seq)
            + b"".join(
                struct.pack("<I", c) + (struct.pack(f"<{c}i", *pos) if i == s else b"") for i, c in enumerate(counts)
            )
        )
        ctypes.memmove(buf, data, size)
        return size

    def llama_state_seq_set_data(self, ctx: SimpleNamespace, buf: ctypes.Array, size: int, s: int) -> int:
        data = bytes(buf)[:size]
        (n_stream,) = struct.unpack_from("<I", data, 8)
        if n_stream != ctx.n_seq:
            return 0  # llama.cpp: "n_stream mismatch"
        at, pos = 12, set()
        for _ in range(n_stream):
            (c,) = struct.unpack_from("<I", data, at)
            pos |= set(struct.unpack_from(f"<{c}i", data, at + 4))
            at += 4 + 4 * c
        assert at == size
        ctx.kv[s] = pos
        self.copies += 1
        return size


def fake_pool(context: int = 64, sequences: int = 4, bos: int = 0) -> tuple[FakeLib, SequencePool]:
    lib = FakeLib()
    return lib, SequencePool(lib, object(), threads=1, context=context, sequences=sequences, bos_offset=bos)


def fill(pool: SequencePool, cache: SeqCache, row: int, n: int) -> None:
    """What a forward of n tokens does to the row's sequence."""
    pool.mem.kv[cache.seqs[row]] = set(range(n))
    pool.touch([cache.seqs[row]])


def new_cache(pool: SequencePool, batch: int, capacity: int) -> SeqCache:
    per = capacity + pool.bos_offset
    return SeqCache(pool, pool.take(batch, per), capacity, per)


def test_a_stream_per_sequence_and_caches_take_consecutive_ids():
    lib, pool = fake_pool(sequences=8)
    a, b = new_cache(pool, 2, 8), new_cache(pool, 1, 8)
    assert not lib.contexts[0].unified and lib.contexts[0].n_ctx == 64 * 8
    assert a.seqs == [0, 1] and b.seqs == [2] and (a.batch, a.capacity) == (2, 8)
    del b
    gc.collect()
    c = new_cache(pool, 3, 8)  # ids 2..4: the first free run of three
    assert c.seqs == [2, 3, 4]


def test_prompt_copy_then_dropping_the_prefill_cache_keeps_the_rows():
    """The engine's prefill: a one-row cache runs the prompt, its KV is copied to n rows, it is dropped."""
    lib, pool = fake_pool(bos=1)
    rows = new_cache(pool, 3, 10)
    tmp = new_cache(pool, 1, 5)
    fill(pool, tmp, 0, 6)  # BOS + 5 prompt tokens
    rows.copy_rows(tmp, 0, torch.tensor([0, 2]), 4)
    kv = pool.mem.kv
    assert kv[rows.seqs[0]] == kv[rows.seqs[2]] == set(range(5)) and rows.seqs[1] not in kv  # BOS + 4
    assert lib.copies == 2
    seq = tmp.seqs[0]
    del tmp
    gc.collect()
    assert seq in pool.free and seq not in kv


def test_select_keeps_rows_in_place_copies_repeats_and_moves_into_the_run():
    lib, pool = fake_pool(sequences=8)
    c = new_cache(pool, 4, 4)
    for r in range(4):
        fill(pool, c, r, r + 1)
    d = c.select(torch.tensor([2, 0, 2]))  # run 0..2: rows 2 and 0 stay, the repeat goes to 1 (dropped)
    kv = pool.mem.kv
    assert d.seqs == [2, 0, 1] and kv[1] == kv[2] == {0, 1, 2} and kv[0] == {0}
    assert 3 not in kv and 3 in pool.free and c.batch == 0 and lib.copies == 1
    e = d.select(torch.tensor([0]))  # seq 2 moves to the run's only id, 0
    assert e.seqs == [0] and kv[0] == {0, 1, 2} and lib.copies == 2
    assert 1 not in kv and 2 not in kv
    del c, d
    gc.collect()
    assert kv == {0: {0, 1, 2}}  # emptied caches free nothing
    del e
    gc.collect()
    assert not kv and sorted(pool.free) == list(range(8))


def test_narrow_is_a_view_that_owns_nothing():
    lib, pool = fake_pool()
    c = new_cache(pool, 2, 4)
    v = c.narrow(1, 1)
    assert v.seqs == [c.seqs[1]]
    del v
    gc.collect()
    assert c.seqs[1] not in pool.free


def test_the_context_grows_and_live_sequences_move_over():
    lib, pool = fake_pool(context=16, sequences=2)
    a = new_cache(pool, 2, 8)
    fill(pool, a, 0, 5)
    fill(pool, a, 1, 7)
    b = new_cache(pool, 3, 20)  # 3 more consecutive sequences of 20 cells
    old, new = lib.contexts
    assert old.freed and new.n_seq == 8 and pool.n_cells == 32 and new.n_ctx == 8 * 32 and pool.ctx is new
    assert new.kv == {0: set(range(5)), 1: set(range(7))} and b.seqs == [2, 3, 4]


def test_more_rows_than_llama_cpp_holds_is_a_clear_error():
    lib, pool = fake_pool(context=16, sequences=MAX_SEQUENCES)
    with pytest.raises(ParameterError, match=f"at most {MAX_SEQUENCES} rows"):
        new_cache(pool, MAX_SEQUENCES + 1, 4)


def test_a_context_over_the_memory_budget_is_a_clear_error():
    lib, pool = fake_pool(context=16, sequences=2)
    pool.kv_bytes, pool.max_kv_bytes = 1000, 100_000
    a = new_cache(pool, 2, 16)
    with pytest.raises(ParameterError, match=r"4 sequences × 32 cells .* over its budget") as err:
        new_cache(pool, 2, 30)
    assert err.value.param == "max_tokens" and len(lib.contexts) == 1 and a.seqs == [0, 1] and pool.free == set()


def test_prefix_blocks_live_in_holder_sequences():
    """A holder is a copy of a row; the last block of a lookup restores the whole prefix; eviction frees it."""
    lib, pool = fake_pool(context=64, sequences=6, bos=1)
    pool.kv_bytes = 100
    pc = PrefixCache(block=4)
    pool.attach(pc)
    kv = pool.mem.kv
    a = new_cache(pool, 1, 12)
    fill(pool, a, 0, 13)  # BOS + 12 tokens
    first = list(range(12))
    assert pc.store(first, lambda s, e: a.read_block(0, s, e)) == 3
    (h,) = pool.holders.values()
    assert h.seq == 5 and kv[5] == set(range(13)) and h.blocks == 3 and lib.copies == 1  # one copy per row state
    assert pc.nbytes == 12 * pool.kv_bytes
    other = first[:4] + [99] * 8  # shares the first block
    b = new_cache(pool, 1, 12)
    fill(pool, b, 0, 13)
    assert pc.store(other, lambda s, e: b.read_block(0, s, e)) == 2 and len(pool.holders) == 2
    n, blocks = pc.lookup(other)
    c = new_cache(pool, 1, 12)
    assert n == 12 and c.write_blocks(0, blocks) == 12 and kv[c.seqs[0]] == set(range(13))
    n, blocks = pc.lookup(first[:8] + [7] * 4)
    assert n == 8 and c.write_blocks(0, blocks) == 8 and kv[c.seqs[0]] == set(range(9))  # trimmed after the block
    pc.clear()
    assert pool.holders == {} and {4, 5} <= pool.free and 4 not in kv and 5 not in kv
    with pytest.raises(ValueError, match="does not continue a prefix"):
        c.write_blocks(0, blocks[1:])


def test_rows_evict_prefix_blocks_before_the_context_grows():
    lib, pool = fake_pool(context=32, sequences=4)
    pool.kv_bytes = 100
    pc = PrefixCache(block=4)
    pool.attach(pc)
    a = new_cache(pool, 1, 16)
    fill(pool, a, 0, 16)
    pc.store(list(range(16)), partial(a.read_block, 0))
    b = new_cache(pool, 1, 16)
    fill(pool, b, 0, 8)
    pc.store(list(range(100, 108)), partial(b.read_block, 0))
    assert len(pool.holders) == 2 and len(pc) == 6 and pool.free == set()
    fill(pool, b, 0, 9)
    assert b.read_block(0, 0, 4) == (None, 0)  # a new state, no spare id: holders never grow the context
    del a, b
    gc.collect()
    c = new_cache(pool, 3, 12)  # three consecutive ids: both holders give way (LRU first)
    assert len(lib.contexts) == 1 and c.seqs == [0, 1, 2] and pool.holders == {} and len(pc) == 0
    fill(pool, c, 0, 8)
    pool._rebuild(64, 8)  # a rebuild clears the prefix cache: rows are restored one by one
    held = {s: v for s, v in pool.mem.kv.items() if v}
    assert len(pc) == 0 and pool.holders == {} and held == {c.seqs[0]: set(range(8))}
    pc.store(list(range(8)), lambda s, e: c.read_block(0, s, e))
    (h,) = pool.holders.values()
    del pc
    gc.collect()  # a prefix cache that goes away frees its holders
    assert pool.holders == {} and h.seq in pool.free and h.seq not in pool.mem.kv


def test_auto_picks_by_model_and_rows():
    assert models.choose_backend("tiny-random", rows=1) == "torch"
    assert models.choose_backend(models.GEMMA_MODEL, rows=16) == "llamacpp"
    assert models.choose_backend("x.gguf", rows=16) == "llamacpp"
    assert models.choose_backend(models.DEFAULT_MODEL, rows=16) == "torch"
    hidden = SamplingParams(fluctuation="pink-hidden").fluctuation
    assert models.choose_backend(models.DEFAULT_MODEL, rows=1, fluctuation=hidden) == "torch"
    with pytest.raises(ParameterError, match="backend must be one of"):
        models.load("tiny-random", backend="vllm")
    with pytest.raises(ModelNotFoundError, match="no GGUF file at"):
        models.load("/nonexistent/model.gguf")  # .gguf → llamacpp, checked before the bindings load
    with pytest.raises(ModelNotFoundError, match="is a GGUF model"):
        models.load(models.GEMMA_MODEL, backend="torch")


def test_auto_crossover_from_timings():
    t = {1: 3.0, 2: 2.0, 4: 1.0, 8: 1.0, 16: 1.0}
    assert models.crossover_rows({"torch": t, "llamacpp": {1: 1.0, 2: 1.5, 4: 1.5, 8: 2.0, 16: 4.0}}) == 4
    assert models.crossover_rows({"torch": t, "llamacpp": {1: 1.0, 2: 1.5, 4: 0.5, 8: 2.0, 16: 4.0}}) == 8
    assert models.crossover_rows({"torch": t, "llamacpp": dict.fromkeys(t, 0.5)}) == 0  # llama.cpp always
    assert models.crossover_rows({"torch": t, "llamacpp": dict.fromkeys(t, 9.0)}) == 1  # torch always


def test_auto_rows_from_the_environment(monkeypatch):
    monkeypatch.setenv(models.AUTO_ROWS_ENV, "5")
    assert models.auto_rows() == 5
    monkeypatch.setenv(models.AUTO_ROWS_ENV, "-1")
    with pytest.raises(ParameterError, match=r"SAZANAMI_AUTO_ROWS must be an integer in \[0, inf\), got '-1'"):
        models.auto_rows()


def test_the_timing_probe_runs_decode_steps():
    """The probe itself, on the tiny model with a tiny budget (a check that it runs, not a measurement)."""
    seconds = models._time_backend(models.load("tiny-random"), rows=(1, 3), budget_s=0.001)
    assert set(seconds) == {1, 3} and all(0 < s < 10 for s in seconds.values())


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_auto_measures_once_and_caches_the_crossover(monkeypatch, tmp_path):
    """Fake timings (no measurement here): the crossover is computed once, cached per machine and model."""
    import json

    monkeypatch.delenv(models.AUTO_ROWS_ENV)
    monkeypatch.setenv("SAZANAMI_CACHE", str(tmp_path))
    fake = {"torch": SimpleNamespace(dtype=torch.bfloat16), "llamacpp": SimpleNamespace(threads=2)}
    monkeypatch.setattr(models, "load", lambda name, backend="auto", threads=None: fake[backend])
    timings = {"torch": {1: 3.0, 2: 2.0, 4: 1.0}, "llamacpp": {1: 1.0, 2: 1.5, 4: 1.5}}
    calls = []

    def time_backend(b: SimpleNamespace) -> dict[int, float]:
        calls.append(b)
        return timings["torch" if b is fake["torch"] else "llamacpp"]

    monkeypatch.setattr(models, "_time_backend", time_backend)
    assert models.auto_rows() == 4 and len(calls) == 2
    assert models.choose_backend(models.DEFAULT_MODEL, rows=3) == "llamacpp"
    assert models.choose_backend(models.DEFAULT_MODEL, rows=4) == "torch" and len(calls) == 2  # cached
    (entry,) = json.loads((tmp_path / "backends.json").read_text()).values()
    assert entry["torch_from_rows"] == 4 and entry["seconds_per_step"]["llamacpp"]["1"] == 1.0


# -- the embedded GGUF through llama.cpp -----------------------------------------------------

needs_bindings = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed (run `make fast`; CI does)",
)
FEW_SHOT = "Q: What is 12*7?\nA: CALC(12*7) => 84\nSo the answer is 84.\nQ: What is 17*23?\nA: "
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain gravity in one sentence.",
    "List three colors.",
    "What is 12 times 7?",
]


@pytest.fixture(scope="module")
def lcp() -> Engine:
    # one thread: llama.cpp's threads spin-wait, and on a shared CI core two of them thrash
    return Engine(models.load(models.DEFAULT_MODEL, backend="llamacpp", threads=1))


def llama_cpp_greedy(path: str, prompt: str, tokens: int) -> str:
    """llama.cpp's own greedy completion through its high-level API (the reference).

    Same attention kernel (flash attention, which the backend's ``auto`` picks on CPU), context
    size and weights (not repacked, as the backend loads them) as the backend: other kernels
    round differently and flip near-ties.
    """
    import llama_cpp
    import llama_cpp.llama_cpp as bindings

    defaults = bindings.llama_model_default_params

    def unpacked():  # the high-level API has no switch for weight repacking
        params = defaults()
        params.use_extra_bufts = False
        return params

    bindings.llama_model_default_params = unpacked
    try:
        llm = llama_cpp.Llama(model_path=path, n_ctx=4096, n_threads=1, flash_attn=True, verbose=False)
    finally:
        bindings.llama_model_default_params = defaults
    return llm.create_completion(prompt, max_tokens=tokens, temperature=0)["choices"][0]["text"]


@needs_bindings
@pytest.mark.real
def test_n4_seeded_reproducible_and_distinct(lcp: Engine):
    p = SamplingParams(n=4, seed=7, max_tokens=12, ignore_eos=True)
    a, b = lcp.generate("Name a fruit.", p), lcp.generate("Name a fruit.", p)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert len({tuple(c.token_ids) for c in a}) >= 3 and all(len(c.token_ids) == 12 for c in a)
    other = lcp.generate("Name a fruit.", p.replace(seed=8))
    assert [c.token_ids for c in other] != [c.token_ids for c in a]


@needs_bindings
@pytest.mark.real
def test_mixed_prompt_lengths_match_one_row_at_a_time(lcp: Engine):
    g = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    both = lcp.generate(["Hi.", "Tell me about the moon and the stars."], g)
    alone = [lcp.generate(p, g)[0] for p in ("Hi.", "Tell me about the moon and the stars.")]
    assert [c.token_ids for c in both] == [c.token_ids for c in alone]


@needs_bindings
@pytest.mark.real
def test_logits_and_greedy_agree_with_the_torch_backend(lcp: Engine):
    """Same Q4_1 weights: torch runs them dequantised in float32, llama.cpp with its Q4_1×Q8 kernels
    and an f16 KV cache, so near-ties flip. Measured: teacher-forced argmax agrees at ≥ 94 % of
    prompt positions, logit correlation 0.999; greedy 32-token runs fully agree on 3 of 5 prompts."""
    torch_engine = Engine(models.load(models.DEFAULT_MODEL, dtype="float32", backend="torch"))
    g = SamplingParams(temperature=0, max_tokens=32)
    agree = 0
    for prompt in PROMPTS:
        ids = lcp.encode(prompt)
        assert ids == torch_engine.encode(prompt)  # same tokenizer
        logits = []
        for b in (torch_engine.backend, lcp.backend):
            cache = b.new_cache(1, len(ids))
            logits.append(b.forward(torch.tensor([ids]), cache, torch.zeros(1, dtype=torch.long), last_only=False)[0])
        x, y = logits  # (T, V)
        assert (x.argmax(-1) == y.argmax(-1)).float().mean() >= 0.9
        assert torch.corrcoef(torch.stack([x.flatten(), y.flatten()]))[0, 1] >= 0.995
        a, c = torch_engine.generate(prompt, g)[0], lcp.generate(prompt, g)[0]
        agree += a.token_ids == c.token_ids
    assert agree >= 2, f"greedy runs agreeing on all tokens: {agree} of 5"


@needs_bindings
@pytest.mark.real
def test_grammar_and_calc_injection_mid_row(lcp: Engine):
    from sazanami.islands import Constraint, Islands, builtin_tools

    isl = Islands(
        tools=builtin_tools(["calc"]),
        constraint=Constraint.regex(r"CALC\([0-9*+ ]{1,12}\)[A-Za-z0-9 ,.]{1,40}"),
        describe_tools=False,
    )
    out = lcp.generate(FEW_SHOT, SamplingParams(n=2, seed=1, max_tokens=24, temperature=0.5), raw=True, islands=isl)
    for c in out:
        assert c.text.startswith("CALC(17*23) => 391\n"), c.text
        assert c.spans[0]["result"] == "391" and c.finish_reason == "stop"


@needs_bindings
@pytest.mark.real
def test_beam_search(lcp: Engine):
    p = SamplingParams(fluctuation={"beams": {"width": 3, "beta": 1}}, seed=2, max_tokens=8, temperature=1.0)
    a, b = lcp.generate("Say something kind.", p), lcp.generate("Say something kind.", p)
    assert len(a) == 3 and len({tuple(c.token_ids) for c in a}) == 3
    assert [c.token_ids for c in a] == [c.token_ids for c in b]


@needs_bindings
@pytest.mark.real
def test_search_over_paths(lcp: Engine):
    from sazanami.search import search

    params = SamplingParams(max_tokens=10, temperature=0.8)
    tree = search(
        lcp, FEW_SHOT, "noise_search", mode="paths", rounds=2, n=3, scorer="contains:391", budget=80,
        params=params, seed=1, raw=True,
    )  # fmt: skip
    assert tree.spend["generated_tokens"] <= 80 and len(tree.candidates()) >= 4


@needs_bindings
@pytest.mark.real
def test_a_position_computes_the_same_however_the_prompt_is_split(lcp: Engine):
    """Keys/values (and so logits) of a long prompt are bit-identical in one forward, in pieces,
    or one token at a time — what lets a row reuse cached blocks and stay token-for-token equal."""
    be = lcp.backend
    ids = (lcp.encode("Write one vivid sentence about a river, a lantern and an autumn stone.") * 8)[:100]
    assert len(ids) == 100  # past the 64-token pieces where llama.cpp's attention changes kernel

    def last_logits(split: int) -> torch.Tensor:
        cache = be.new_cache(1, len(ids) + 1)
        for s in range(0, len(ids), split):
            out = be.forward(torch.tensor([ids[s : s + split]]), cache, torch.tensor([s]))
        return out[0]

    whole = last_logits(len(ids))
    assert torch.equal(whole, last_logits(1)) and torch.equal(whole, last_logits(37))
    two = be.new_cache(2, len(ids) + 1)  # and beside another row
    both = be.forward(torch.tensor([ids, ids[::-1]]), two, torch.zeros(2, dtype=torch.long))
    assert torch.equal(both[0], whole)


@needs_bindings
@pytest.mark.real
def test_prefix_cache_gives_the_same_tokens_and_reuses(lcp: Engine):
    """Cached prompt blocks live in holder sequences; rows start from them and compute the rest."""
    assert lcp.backend.supports_prefix_cache and lcp.prefix_cache is not None
    # models.load shares this backend with other files' engines: their caches may hold every spare
    # sequence (holders never grow the context), so start from none held
    for cache in list(lcp.backend.pool.caches):
        cache.clear()
    on, off = Engine(lcp.backend), Engine(lcp.backend, prefix_cache=False)
    p = SamplingParams(n=3, seed=5, max_tokens=10, temperature=0.8)
    prompt = "Write a story about a fox who lives in a forest near a wide, slow river."
    want = [[c.token_ids for c in off.generate(prompt, p)] for _ in range(2)]
    got = [on.generate(prompt, p) for _ in range(2)]
    assert [[c.token_ids for c in cs] for cs in got] == want
    assert got[0][0].cached_tokens == 0 and got[1][0].cached_tokens >= 16
    b = SamplingParams(fluctuation={"beams": {"width": 2, "beta": 1}}, seed=2, max_tokens=6)
    assert [c.token_ids for c in on.generate(prompt, b)] == [c.token_ids for c in off.generate(prompt, b)]


@needs_bindings
@pytest.mark.real
@pytest.mark.parametrize(
    "strategy, options", [("noise_search", {"mode": "paths", "rounds": 2, "n": 3}), ("tree", {"chunk": 4, "branch": 2})]
)
def test_search_trees_are_the_same_with_the_prefix_cache(lcp: Engine, strategy: str, options: dict):
    from sazanami.search import search

    on, off = Engine(lcp.backend), Engine(lcp.backend, prefix_cache=False)
    kw = dict(scorer="contains:391", budget=60, params=SamplingParams(max_tokens=10, temperature=0.8), seed=1, raw=True)
    a, b = search(off, FEW_SHOT, strategy, **kw, **options), search(on, FEW_SHOT, strategy, **kw, **options)
    assert [n.token_ids for n in a.nodes] == [n.token_ids for n in b.nodes] and a.best == b.best
    assert a.spend["prompt_tokens_reused"] == 0 and b.spend["prompt_tokens_reused"] > 0
    assert a.spend["prompt_tokens"] == b.spend["prompt_tokens"] + b.spend["prompt_tokens_reused"]


@needs_bindings
@pytest.mark.real
def test_hidden_noise_is_refused_naming_the_backend(lcp: Engine):
    with pytest.raises(ParameterError, match="hidden noise is not available on the llamacpp backend"):
        lcp.generate("Hi", SamplingParams(max_tokens=2, fluctuation="pink-hidden", seed=1))


def identity_embedding_hook(layer: int, h: torch.Tensor) -> torch.Tensor:
    """Touches the input embeddings only (a new tensor, same values)."""
    return h.clone() if layer == -1 else h


def embedding_path_is_exact(backend: object, text: str) -> bool:
    """Logits through the batch's ``embd`` input (GGUF rows, scaled) equal the token input's."""
    ids = backend.tokenizer.encode(text)
    zero = torch.zeros(1, dtype=torch.long)
    out = [
        backend.forward(torch.tensor([ids]), backend.new_cache(1, len(ids)), zero, hook)
        for hook in (None, identity_embedding_hook)
    ]
    return torch.equal(out[0], out[1])


@needs_bindings
@pytest.mark.real
def test_embedding_noise_enters_through_the_embd_input(lcp: Engine):
    assert embedding_path_is_exact(lcp.backend, "The capital of France is")
    p = SamplingParams(n=2, seed=3, max_tokens=10, ignore_eos=True, fluctuation="pink-embedding")
    a, b = lcp.generate("Name a fruit.", p), lcp.generate("Name a fruit.", p)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    plain = lcp.generate("Name a fruit.", p.replace(fluctuation=None))
    assert [c.token_ids for c in plain] != [c.token_ids for c in a]


@needs_bindings
@pytest.mark.real
def test_greedy_equals_llama_cpps_own_completion(lcp: Engine):
    prompt = "The three primary colors are"
    out = lcp.generate(prompt, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True), raw=True)
    assert out[0].text == llama_cpp_greedy(str(models.gguf_path(models.DEFAULT_MODEL)), prompt, 12)


@needs_bindings
@pytest.mark.real
@pytest.mark.skipif(importlib.util.find_spec(models.GEMMA_WHEEL) is None, reason="gemma3-270m wheels not installed")
def test_gemma_puts_bos_first_and_matches_llama_cpp():
    backend = models.load(models.GEMMA_MODEL, threads=1)
    assert backend.bos is not None and backend.vocab_size > 200_000
    prompt = "The capital of France is"
    out = Engine(backend).generate(prompt, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True), raw=True)
    assert out[0].text == llama_cpp_greedy(str(models.gguf_path(models.GEMMA_MODEL)), prompt, 6)
    # no chat template in this base GGUF: Gemma's turn format, its markers single special tokens
    assert embedding_path_is_exact(backend, "The capital of France is")  # BOS + √C-scaled rows
    ids = Engine(backend).encode("Hi")
    assert backend.tokenizer.decode(ids[:1], skip_special=False) == "<start_of_turn>" and len(ids) == 9


@needs_bindings
@pytest.mark.real
def test_a_context_that_grows_keeps_the_live_rows(lcp: Engine):
    """A tiny context (2 sequences of 64 cells) rebuilt under live rows: their KV moves over intact."""
    from sazanami.backends.llamacpp import LlamaCppBackend

    small = LlamaCppBackend(models.gguf_path(models.DEFAULT_MODEL), threads=1, context=64, sequences=2)
    ids = lcp.encode("Tell me about the sea.")
    zero = torch.zeros(1, dtype=torch.long)
    cache = small.new_cache(1, len(ids) + 2)
    small.forward(torch.tensor([ids]), cache, zero)
    before = small.pool.ctx
    other = small.new_cache(4, 40)  # 4 more sequences and 40 cells each: a new context
    assert small.pool.ctx is not before and small.pool.n_seq >= 5 and small.pool.n_cells >= 40
    grown = small.forward(torch.tensor([[ids[0]]]), cache, torch.tensor([len(ids)]))
    ref_cache = lcp.backend.new_cache(1, len(ids) + 2)
    lcp.backend.forward(torch.tensor([ids]), ref_cache, zero)
    ref = lcp.backend.forward(torch.tensor([[ids[0]]]), ref_cache, torch.tensor([len(ids)]))
    assert torch.allclose(grown, ref, atol=1e-3) and other.batch == 4
    out = Engine(small).generate("Hi", SamplingParams(n=6, seed=1, max_tokens=20, ignore_eos=True))
    assert len(out) == 6 and all(c.completion_tokens == 20 for c in out)


def test_cli_backend_option_refuses_what_the_backend_cannot_run():
    from click.testing import CliRunner

    from sazanami.cli import main

    r = CliRunner().invoke(main, ["generate", "Hi", "--model", "tiny-random", "--backend", "llamacpp"])
    assert r.exit_code == 2 and "has no GGUF file" in r.output
    r = CliRunner().invoke(main, ["generate", "Hi", "--model", "tiny-random", "--max-tokens", "2", "--json"])
    assert r.exit_code == 0 and '"backend": "torch"' in r.output


@needs_bindings
@pytest.mark.real
def test_cli_generate_on_llamacpp_says_so():
    from click.testing import CliRunner

    from sazanami.cli import main

    args = ["generate", "Name a fruit.", "--backend", "llamacpp", "-n", "2", "--max-tokens", "3", "--seed", "1"]
    r = CliRunner().invoke(main, [*args, "--json"])
    assert r.exit_code == 0 and '"backend": "llamacpp"' in r.output and r.output.count('"finish_reason"') == 2
    r = CliRunner().invoke(main, [*args, "-f", "pink-hidden"])
    assert r.exit_code == 2 and "hidden noise is not available on the llamacpp backend" in r.output


# -- --backend on every command that takes --model ------------------------------------------------


def _commands(group: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    import click

    out = []
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        if isinstance(cmd, click.Group):
            out += _commands(cmd, (*path, name))
        else:
            out.append(((*path, name), cmd))
    return out


def test_every_command_with_a_model_takes_the_backend():
    from sazanami.cli import main
    from sazanami.cli.options import options_of
    from sazanami.engine.engine_spec import ENGINE_BACKENDS  # the model backends, then vllm

    assert ENGINE_BACKENDS[: len(models.BACKENDS)] == models.BACKENDS
    torch_only = {"train", "prune"}  # they change the weights: gradients and masks need torch
    tokenizer_only = {"index"}  # reads the model's tokenizer only (models.BACKENDS: no engine, no vLLM)
    with_model = [
        (p, c)
        for p, c in _commands(main)
        if "model" in options_of(c) and " ".join(p) not in torch_only | tokenizer_only
    ]
    assert {" ".join(p) for p, _ in with_model} >= {"generate", "search", "flow run", "serve", "bench frontier"}
    for path, cmd in with_model:
        option = options_of(cmd).get("backend")
        assert option is not None, path
        assert tuple(option.type.choices) == ENGINE_BACKENDS and option.default == "auto", path


def test_search_flow_and_serve_say_which_backend_runs(tmp_path, monkeypatch):
    import json

    import uvicorn
    import yaml
    from click.testing import CliRunner

    from sazanami.cli import main

    run = CliRunner().invoke
    args = ["search", "hi", "-m", "tiny-random", "--scorer", "logprob", "--max-tokens", "3", "--budget", "12"]
    r = run(main, [*args, "--seed", "1", "--json", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["meta"]["backend"] == "torch"
    r = run(main, [*args, "--backend", "llamacpp"])
    assert r.exit_code == 2 and "has no GGUF file" in r.output
    flow = tmp_path / "f.yaml"
    flow.write_text(yaml.safe_dump({"name": "f", "prompt": "hi", "steps": [{"generate": {"n": 2, "max_tokens": 2}}]}))
    r = run(main, ["flow", "run", str(flow), "-m", "tiny-random", "--budget", "8", "--json", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["meta"]["backend"] == "torch"
    r = run(main, ["flow", "run", str(flow), "-m", "tiny-random", "--backend", "llamacpp"])
    assert r.exit_code == 2 and "has no GGUF file" in r.output
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))
    r = run(main, ["serve", "-m", "tiny-random", "--backend", "torch", "--tools", ""])
    assert r.exit_code == 0 and "serving tiny-random on torch" in r.output, r.output
    assert served[0].state.server.engine.backend.capabilities.backend == "torch"
    r = run(main, ["serve", "-m", "tiny-random", "--backend", "llamacpp", "--tools", ""])
    assert r.exit_code == 2 and "has no GGUF file" in r.output
    r = run(main, ["bench", "frontier", "-m", "tiny-random", "--backend", "llamacpp", "-q"])
    assert r.exit_code == 2 and "has no GGUF file" in r.output


@needs_bindings
@pytest.mark.real
def test_search_serve_and_frontier_on_llamacpp(monkeypatch):
    import json

    import uvicorn
    from click.testing import CliRunner

    from sazanami.cli import main
    from sazanami.server import create_app

    run = CliRunner().invoke
    args = ["search", "Name a fruit.", "--backend", "llamacpp", "--scorer", "logprob", "--max-tokens", "3"]
    r = run(main, [*args, "--budget", "9", "--seed", "1", "--json", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["meta"]["backend"] == "llamacpp"
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))
    r = run(main, ["serve", "--backend", "llamacpp", "--threads", "1", "--tools", ""])
    assert r.exit_code == 0 and f"serving {models.DEFAULT_MODEL} on llamacpp" in r.output, r.output
    from fastapi.testclient import TestClient

    assert TestClient(served[0]).get("/v1/sazanami").json()["backend"] == "llamacpp"
    # auto: a server's batches hold many rows → torch; a one-row server → llama.cpp
    from sazanami.server.limits import Limits

    one = create_app(models.DEFAULT_MODEL, Limits(max_batch_rows=1), tools=None, threads=1)
    assert one.state.server.engine.backend.capabilities.backend == "llamacpp"
    r = run(main, ["bench", "frontier", "--backend", "llamacpp", "--methods", "pink-hidden", "-q"])
    assert r.exit_code == 2 and "hidden noise is not available on the llamacpp backend" in r.output
