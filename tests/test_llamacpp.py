"""The llama.cpp backend: sequence bookkeeping on a fake library, then the embedded GGUF for real."""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import struct
from types import SimpleNamespace

import pytest
import torch

from sazanami import models
from sazanami.backends.llamacpp import MAX_SEQUENCES, SeqCache, _Pool
from sazanami.engine import Engine
from sazanami.errors import ModelNotFoundError, ParameterError
from sazanami.params import SamplingParams

# -- bookkeeping, on a fake of llama.cpp's memory API (no bindings needed) --------------------


class FakeLib:
    """llama.cpp's sequence/memory calls over a dict {ctx: {seq: set of positions}}."""

    def __init__(self) -> None:
        self.contexts: list[SimpleNamespace] = []

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
        assert (p0, p1) == (-1, -1)
        mem.kv.pop(s, None)
        return True

    def llama_memory_seq_cp(self, mem: SimpleNamespace, s: int, d: int, p0: int, p1: int) -> None:
        assert 0 <= s < mem.n_seq and 0 <= d < mem.n_seq
        hi = p1 if p1 >= 0 else 1 << 30
        mem.kv.setdefault(d, set()).update(p for p in mem.kv.get(s, ()) if max(p0, 0) <= p < hi)

    def llama_state_seq_get_size(self, ctx: SimpleNamespace, s: int) -> int:
        return 4 * (len(ctx.kv.get(s, ())) + 1)

    def llama_state_seq_get_data(self, ctx: SimpleNamespace, buf: ctypes.Array, size: int, s: int) -> int:
        data = struct.pack(f"<{size // 4}i", size // 4 - 1, *sorted(ctx.kv.get(s, ())))
        ctypes.memmove(buf, data, size)
        return size

    def llama_state_seq_set_data(self, ctx: SimpleNamespace, buf: ctypes.Array, size: int, s: int) -> int:
        n, *pos = struct.unpack(f"<{size // 4}i", bytes(buf))
        assert n == len(pos)
        ctx.kv[s] = set(pos)
        return size


def fake_pool(context: int = 64, sequences: int = 4, bos: int = 0) -> tuple[FakeLib, _Pool]:
    lib = FakeLib()
    return lib, _Pool(lib, object(), threads=1, context=context, sequences=sequences, bos_offset=bos)


def fill(pool: _Pool, cache: SeqCache, row: int, n: int) -> None:
    """What a forward of n tokens does to the row's sequence."""
    pool.mem.kv[cache.seqs[row]] = set(range(n))


def new_cache(pool: _Pool, batch: int, capacity: int) -> SeqCache:
    per = capacity + pool.bos_offset
    return SeqCache(pool, pool.take(batch, per), capacity, per)


def test_context_is_unified_and_caches_take_distinct_sequences():
    lib, pool = fake_pool()
    a, b = new_cache(pool, 2, 8), new_cache(pool, 1, 8)
    assert lib.contexts[0].unified and a.seqs == [0, 1] and b.seqs == [2]
    assert pool.reserved == 24 and (a.batch, a.capacity) == (2, 8)


def test_prompt_copy_then_dropping_the_prefill_cache_keeps_the_rows():
    """The engine's prefill: a one-row cache runs the prompt, its KV goes to n rows, it is dropped."""
    lib, pool = fake_pool(bos=1)
    rows = new_cache(pool, 3, 10)
    tmp = new_cache(pool, 1, 5)
    fill(pool, tmp, 0, 6)  # BOS + 5 prompt tokens
    rows.copy_rows(tmp, 0, torch.tensor([0, 2]), 4)
    kv = pool.mem.kv
    assert kv[rows.seqs[0]] == kv[rows.seqs[2]] == set(range(5)) and rows.seqs[1] not in kv  # BOS + 4
    seq = tmp.seqs[0]
    del tmp
    gc.collect()
    assert seq in pool.free and seq not in kv and pool.reserved == 3 * 11


def test_select_moves_sequences_copies_repeats_and_frees_the_rest():
    lib, pool = fake_pool(sequences=8)
    c = new_cache(pool, 3, 4)
    for r in range(3):
        fill(pool, c, r, r + 1)
    s0, s1, s2 = c.seqs
    d = c.select(torch.tensor([2, 0, 2]))
    kv = pool.mem.kv
    assert d.seqs[:2] == [s2, s0] and d.seqs[2] not in (s0, s1, s2)
    assert kv[d.seqs[2]] == kv[s2] == {0, 1, 2} and s1 not in kv and s1 in pool.free
    assert c.batch == 0 and pool.reserved == 3 * 4  # the old cache handed everything over
    del c
    gc.collect()
    assert kv[s0] == {0} and pool.reserved == 12  # dropping the emptied cache frees nothing
    del d
    gc.collect()
    assert not kv and pool.reserved == 0 and sorted(pool.free) == list(range(8))


def test_narrow_is_a_view_that_owns_nothing():
    lib, pool = fake_pool()
    c = new_cache(pool, 2, 4)
    v = c.narrow(1, 1)
    assert v.seqs == [c.seqs[1]]
    del v
    gc.collect()
    assert c.seqs[1] not in pool.free and pool.reserved == 8


def test_the_context_grows_and_live_sequences_move_over():
    lib, pool = fake_pool(context=16, sequences=2)
    a = new_cache(pool, 2, 8)
    fill(pool, a, 0, 5)
    fill(pool, a, 1, 7)
    b = new_cache(pool, 3, 20)  # 3 more sequences, 60 more cells
    old, new = lib.contexts
    assert old.freed and new.n_seq == 8 and new.n_ctx == 128 and pool.ctx is new
    assert new.kv == {a.seqs[0]: set(range(5)), a.seqs[1]: set(range(7))} and len(set(a.seqs + b.seqs)) == 5


def test_more_rows_than_llama_cpp_holds_is_a_clear_error():
    lib, pool = fake_pool(context=1 << 20, sequences=MAX_SEQUENCES)
    with pytest.raises(ParameterError, match=f"at most {MAX_SEQUENCES} rows"):
        new_cache(pool, MAX_SEQUENCES + 1, 4)


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

    Same attention kernel (flash attention, which the backend's ``auto`` picks on CPU) and
    context size as the backend: other kernels round differently and flip near-ties.
    """
    import llama_cpp

    llm = llama_cpp.Llama(model_path=path, n_ctx=4096, n_threads=1, flash_attn=True, verbose=False)
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
    """A tiny context (64 cells, 2 sequences) rebuilt under live rows: their KV moves over intact."""
    from sazanami.backends.llamacpp import LlamaCppBackend

    small = LlamaCppBackend(models.gguf_path(models.DEFAULT_MODEL), threads=1, context=64, sequences=2)
    ids = lcp.encode("Tell me about the sea.")
    zero = torch.zeros(1, dtype=torch.long)
    cache = small.new_cache(1, len(ids) + 2)
    small.forward(torch.tensor([ids]), cache, zero)
    before = small.pool.ctx
    other = small.new_cache(4, 40)  # 4 more sequences and 160 more cells: a new context
    assert small.pool.ctx is not before and small.pool.n_seq >= 5 and small.pool.n_ctx >= 160 + 40
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
