"""The prefix cache: keyed blocks, LRU eviction, and outputs identical with it on or off."""

from __future__ import annotations

import pytest
import torch

from sazanami import models
from sazanami.backends.llama import LlamaBackend
from sazanami.engine.loop import Engine
from sazanami.engine.prefix_cache import PrefixCache
from sazanami.errors import ParameterError
from sazanami.sampling.params import SamplingParams
from sazanami.search import search


def _reader(nbytes: int = 10):
    calls = []

    def read(a: int, b: int):
        calls.append((a, b))
        return (a, b), nbytes

    return read, calls


def test_blocks_are_keyed_by_their_whole_prefix():
    pc = PrefixCache(block=4)
    read, calls = _reader()
    assert pc.store(list(range(10)), read) == 2  # two full blocks; the tail of 2 is not stored
    assert calls == [(0, 4), (4, 8)]
    assert pc.lookup(list(range(12))) == (8, [(0, 4), (4, 8)])
    assert pc.lookup([0, 1, 2, 3, 9, 9, 9, 9])[0] == 4  # second block differs
    assert pc.lookup([9, 1, 2, 3, 4, 5, 6, 7])[0] == 0  # same second block, other first: no hit
    assert pc.lookup(list(range(12)), limit=7)[0] == 4  # a row must compute its last token
    # storing again adds only what is new
    read2, calls2 = _reader()
    assert pc.store(list(range(12)), read2) == 1 and calls2 == [(8, 12)]


def test_lru_eviction_drops_descendants_and_keeps_the_cap():
    pc = PrefixCache(max_bytes=30, block=2)
    read, _ = _reader(10)
    pc.store([1, 2, 3, 4], read)  # blocks A=[1,2], A/B=[3,4]
    pc.store([5, 6], read)  # C
    assert pc.nbytes == 30 and len(pc) == 3
    pc.lookup([5, 6, 0])  # C used recently; A is now the oldest
    pc.store([7, 8], read)  # over the cap: A goes, and with it its child B
    assert pc.nbytes <= 30
    assert pc.lookup([1, 2, 3, 4])[0] == 0
    assert pc.lookup([5, 6])[0] == 2 and pc.lookup([7, 8])[0] == 2
    assert pc.stats.evicted_blocks == 2


def test_zero_bytes_stores_nothing_and_bad_options_are_errors():
    pc = PrefixCache(max_bytes=0)
    assert pc.store(list(range(64)), _reader()[0]) == 0
    with pytest.raises(ParameterError, match="block must be an integer in \\[1, 1024\\], got 0"):
        PrefixCache(block=0)
    with pytest.raises(ParameterError, match="max_bytes"):
        PrefixCache(max_bytes=-1)


@pytest.fixture(scope="module")
def engines():
    backend = models.load("tiny-random")
    return Engine(backend, prefix_cache=False), Engine(backend, prefix_cache=PrefixCache(block=4))


def test_generate_reuses_the_prompt_and_gives_the_same_tokens(engines):
    off, on = engines
    params = SamplingParams(n=3, seed=3, max_tokens=12, temperature=0.9)
    want = [c.token_ids for c in off.generate("Tell me about the sea.", params)]
    first = on.generate("Tell me about the sea.", params)
    again = on.generate("Tell me about the sea.", params)
    assert [c.token_ids for c in first] == want == [c.token_ids for c in again]
    assert first[0].cached_tokens == 0
    assert again[0].cached_tokens > 0 and again[0].cached_tokens % 4 == 0
    assert again[0].cached_tokens < again[0].prompt_tokens  # the last prompt token always runs
    on.clear_prefix_cache()  # cold again: nothing to reuse
    assert len(on.prefix_cache) == 0 and on.generate("Tell me about the sea.", params)[0].cached_tokens == 0
    off.clear_prefix_cache()  # no cache: nothing to do


STRATEGIES = [
    ("best_of_n", {"n": 3}),
    ("anneal", {"rounds": 2}),
    ("noise_search", {"mode": "paths", "rounds": 3}),
    ("noise_search", {"mode": "zero-order", "rounds": 2, "n": 3}),
    ("beam", {"width": 3}),
    ("tree", {"chunk": 4, "branch": 2}),
    ("optimize", {"n": 2}),
    ("synthesize", {"base": "noise_search", "mode": "paths", "k": 2}),
]


@pytest.mark.parametrize("strategy, options", STRATEGIES, ids=[f"{s}-{o.get('mode', '')}" for s, o in STRATEGIES])
def test_every_strategy_gives_the_same_tree_with_the_cache(engines, strategy, options):
    off, on = engines
    noise = None if strategy == "beam" else "pink-temperature"  # beams draw with their own Gumbel noise
    params = SamplingParams(max_tokens=16, fluctuation=noise)
    kw = dict(scorer="contains:a,e", budget=200, params=params, seed=11, **options)
    a = search(off, "Write a line about rivers.", strategy, **kw)
    b = search(on, "Write a line about rivers.", strategy, **kw)
    assert [n.token_ids for n in a.nodes] == [n.token_ids for n in b.nodes]
    assert a.best == b.best
    assert a.spend["prompt_tokens_reused"] == 0
    # what the cache saved is reported, and the prompt positions add up
    total_a = a.spend["prompt_tokens"]
    total_b = b.spend["prompt_tokens"] + b.spend["prompt_tokens_reused"]
    assert total_a == total_b
    if strategy != "beam":  # one beam search per round: its prompt may be new to the cache
        assert b.spend["prompt_tokens_reused"] > 0


def test_the_engine_takes_the_backends_block_and_one_token_blocks_are_identical(engines):
    """Engines cache at their backend's granularity (llama.cpp: 1 token); at 1 token a
    continuation computes only its last prompt token, and the tree is the same."""
    off, _ = engines
    assert Engine(off.backend).prefix_cache.block == off.backend.prefix_block == 4
    one = Engine(off.backend, prefix_cache=PrefixCache(block=1))
    kw = dict(scorer="contains:a,e", budget=200, params=SamplingParams(max_tokens=16), seed=5, mode="paths", rounds=3)
    a = search(off, "Write a line about rivers.", "noise_search", **kw)
    b = search(one, "Write a line about rivers.", "noise_search", **kw)
    assert [n.token_ids for n in a.nodes] == [n.token_ids for n in b.nodes]
    rows = b.spend["prompt_tokens"] + b.spend["prompt_tokens_reused"]
    assert b.spend["prompt_tokens"] < rows / 4


def test_continuations_reuse_their_parents_tokens():
    backend = models.load("tiny-random")
    on = Engine(backend, prefix_cache=PrefixCache(block=4))
    params = SamplingParams(max_tokens=24)
    tree = search(on, "Write a line about rivers.", "noise_search", mode="paths", rounds=4, scorer="contains:a",
                  budget=240, params=params, seed=2)  # fmt: skip
    conts = [n for n in tree.nodes if n.kind == "continue"]
    assert conts
    # prompt tokens run per continuation fall well below prompt + kept prefix
    assert tree.spend["prompt_tokens_reused"] > tree.spend["prompt_tokens"]


def test_rows_with_hidden_noise_store_only_their_prompt():
    backend = models.load("tiny-random")
    pc = PrefixCache(block=4)
    on = Engine(backend, prefix_cache=pc)
    fl = {"hidden": {"sigma": 0.5, "beta": 1.0}}
    prompt_ids = on.encode("Tell me about the sea.")
    on.generate("Tell me about the sea.", SamplingParams(n=2, seed=1, max_tokens=20, fluctuation=fl))
    assert len(pc) == len(prompt_ids) // 4  # the prompt's full blocks, nothing generated
    on.generate("Tell me about the sea.", SamplingParams(n=2, seed=1, max_tokens=20))
    assert len(pc) > len(prompt_ids) // 4  # plain rows store what they generated


def test_a_full_cache_hit_still_computes_the_last_token():
    backend = models.load("tiny-random")
    on = Engine(backend, prefix_cache=PrefixCache(block=1))
    off = Engine(backend, prefix_cache=False)
    ids = on.encode("Hi")
    cache = backend.new_cache(1, len(ids))
    on.prefill(ids, cache)
    cache2 = backend.new_cache(1, len(ids))
    logits, reused = on.prefill(ids, cache2)
    assert reused == len(ids) - 1
    want, _ = off.prefill(ids, backend.new_cache(1, len(ids)))
    torch.testing.assert_close(logits, want)


def test_rows_that_may_not_reuse_compute_their_whole_prompt(engines):
    from sazanami.sampling.rows import RowRequest

    _, on = engines
    ids = on.encode("A batch-invariant request.")
    params = SamplingParams(max_tokens=4, seed=1)
    on.run([RowRequest(ids, params, 1)])
    again = on.run([RowRequest(ids, params, 1)])[0]
    alone = on.run([RowRequest(ids, params, 1, reuse=False)])[0]
    assert again.cached_tokens > 0 and alone.cached_tokens == 0
    assert alone.token_ids == again.token_ids


def test_the_server_reports_its_prefix_cache(tiny_engine):
    from fastapi.testclient import TestClient

    from sazanami.server.app import create_app

    with TestClient(create_app(engine=tiny_engine)) as client:
        body = {"prompt": "A long shared system prompt, then a question: name a fruit.", "max_tokens": 3, "seed": 1}
        for _ in range(2):
            assert client.post("/v1/completions", json=body).status_code == 200
        pc = client.get("/health").json()["prefix_cache"]
        assert pc["reused_tokens"] > 0 and 0 < pc["hit_rate"] < 1


def test_on_evict_sees_every_block_that_leaves_and_a_full_backend_stops_storing():
    gone: list[object] = []
    pc = PrefixCache(max_bytes=100, block=2, on_evict=gone.append)
    pc.store([1, 2, 3, 4], lambda a, b: ((a, b), 10))
    assert pc.evict_lru() and sorted(gone) == [(0, 2), (2, 4)] and len(pc) == 0  # the root and its child
    assert not pc.evict_lru()
    room = iter([((0, 2), 10), (None, 0)])  # the backend has room for one block only
    assert pc.store([1, 2, 3, 4], lambda a, b: next(room)) == 1 and pc.nbytes == 10
    pc.clear()
    assert gone[-1] == (0, 2) and len(gone) == 3


class _OnePassPerPrompt:
    """The same model, without ragged prefill: every prompt gets a forward pass of its own."""

    ragged_prefill = False

    def __init__(self, backend):
        self._backend = backend

    def __getattr__(self, name):
        return getattr(self._backend, name)


def _counting(backend):
    passes = []
    forward = backend.forward

    def counted(tokens, *args, **kwargs):
        passes.append(tuple(tokens.shape))
        return forward(tokens, *args, **kwargs)

    return counted, passes


@pytest.mark.parametrize("positions", [2048, 48])
def test_prompts_of_different_lengths_prefill_in_one_pass(monkeypatch, positions):
    import sazanami.engine.loop as engine_module

    monkeypatch.setattr(engine_module, "RAGGED_POSITIONS", positions)  # 48: several passes
    backend = models.load("tiny-random")
    plain = Engine(_OnePassPerPrompt(backend), prefix_cache=PrefixCache(block=4))
    ragged = Engine(backend, prefix_cache=PrefixCache(block=4))
    warm = "Tell me about the sea and its tides."
    prompts = [warm + " And the moon?", "Hi.", warm + " And the wind, the salt, the gulls?", "A poem."]
    params = SamplingParams(n=2, seed=5, max_tokens=8, temperature=0.9)
    for e in (plain, ragged):
        e.generate(warm, params)  # some prompts now start with cached blocks: rows start at other positions
    want = plain.generate(prompts, params)
    counted, passes = _counting(backend)
    monkeypatch.setattr(backend, "forward", counted)
    got = ragged.generate(prompts, params)
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    assert [c.cached_tokens for c in got] == [c.cached_tokens for c in want]
    assert len({c.cached_tokens for c in got}) > 1  # the rows start at different positions
    assert [c.logprobs for c in got] == [c.logprobs for c in want]  # bit for bit, not only the tokens
    prefills = [p for p in passes if p[1] > 1]
    if positions == 2048:
        # one pass for three prompts; the third waits a pass to reuse the first one's new blocks
        assert [b for b, _ in prefills] == [3, 1]
    else:
        assert len(prefills) > 2 and all(b == 1 or b * t <= positions for b, t in prefills)


def _wide_random(dtype: torch.dtype = torch.float32) -> LlamaBackend:
    """Two layers in SmolLM2-135M's shapes (576 wide, 1,536 in the MLP, 9 heads over 3 KV
    heads of 64): the MLP's 1,536-term sums are where a BLAS splits work over threads."""
    from sazanami.backends.llama import LlamaConfig

    tiny = models.load("tiny-random")
    cfg = LlamaConfig(vocab_size=tiny.vocab_size, hidden_size=576, intermediate_size=1536, num_layers=2,
                      num_heads=9, num_kv_heads=3, head_dim=64, rms_norm_eps=1e-5, rope_theta=10000.0,
                      max_positions=512, tie_word_embeddings=True)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    C, I, H, KV, D = 576, 1536, 9, 3, 64
    weights = {
        "model.embed_tokens.weight": torch.randn(cfg.vocab_size, C, generator=gen),
        "model.norm.weight": torch.ones(C),
    }
    shapes = {"self_attn.q_proj": (H * D, C), "self_attn.k_proj": (KV * D, C), "self_attn.v_proj": (KV * D, C),
              "self_attn.o_proj": (C, H * D), "mlp.gate_proj": (I, C), "mlp.up_proj": (I, C), "mlp.down_proj": (C, I)}  # fmt: skip
    for i in range(2):
        weights |= {f"model.layers.{i}.input_layernorm.weight": torch.ones(C)}
        weights |= {f"model.layers.{i}.post_attention_layernorm.weight": torch.ones(C)}
        for name, shape in shapes.items():
            weights[f"model.layers.{i}.{name}.weight"] = torch.randn(*shape, generator=gen) * shape[1] ** -0.5
    return LlamaBackend("wide-random", cfg, weights, tiny.tokenizer, dtype)


def _run(backend, ids: list[int], splits: list[int], rows: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keys, values and per-position logits of ``ids`` computed in pieces ending at ``splits``
    (a piece of one token is a decode step), as row 0 of ``rows`` rows whose other rows hold
    other tokens and other lengths (they shift every call's shapes)."""
    n = len(ids)
    cache = backend.new_cache(rows, n + 3 * rows)
    gen = torch.Generator().manual_seed(n)
    others = torch.randint(3, backend.vocab_size, (rows, n + 3 * rows), generator=gen)
    lengths = torch.tensor([0] + [2 * r + 1 for r in range(1, rows)])  # the others start ahead
    for r in range(1, rows):
        backend.forward(others[r : r + 1, : int(lengths[r])], cache.narrow(r, 1), torch.tensor([0]))
    logits, at = [], 0
    for end in [*splits, n]:
        T = end - at
        tokens = torch.cat([torch.tensor([ids[at:end]]), others[1:, :T]])  # (rows, T)
        out = backend.forward(tokens, cache, lengths, last_only=False)  # (rows, T, V)
        logits.append(out[0])
        lengths, at = lengths + T, end
    return cache.k[:, 0, :, :n], cache.v[:, 0, :, :n], torch.cat(logits)


@pytest.mark.parametrize("model, dtype", [("tiny-random", "float32"), ("wide", "float32"), ("wide", "bfloat16")])
def test_a_positions_keys_values_and_logits_do_not_depend_on_how_they_were_computed(model, dtype):
    """Bit for bit: a prompt in one piece; a prefix, then the rest (a prefix-cache hit); in
    decode steps; beside other rows of other lengths; with 1 or 2 threads. (On an AVX-512
    Xeon the old forward differed in the fifth digit: MKL's one-row kernel, its thread split
    past 16 rows, and fused attention rounding by the key length.)"""
    dt = models.DTYPES[dtype]
    backend = models.tiny_random(dtype=dtype) if model == "tiny-random" else _wide_random(dt)
    ids = [int(t) for t in torch.randint(3, backend.vocab_size, (100,), generator=torch.Generator().manual_seed(1))]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        want = _run(backend, ids, [])
        torch.set_num_threads(2)
        ways = {
            "whole, two threads": _run(backend, ids, []),
            "a prefix of 13, then the rest": _run(backend, ids, [13]),
            "blocks of 4": _run(backend, ids, list(range(4, 100, 4))),
            "17, then decode steps": _run(backend, ids, list(range(17, 40)) + [70]),
            "beside 2 other rows": _run(backend, ids, [40, 41, 42, 80], rows=3),
            "beside 16 other rows": _run(backend, ids, [1, 64, 65], rows=17),
        }
    finally:
        torch.set_num_threads(threads)
    for way, got in ways.items():
        for name, a, b in zip(("keys", "values", "logits"), got, want):
            assert torch.equal(a, b), f"{way}: {name} differ by up to {(a - b).abs().max():.2e}"


def test_outputs_are_bit_identical_with_the_cache_alone_or_in_a_batch(engines):
    """Not only the tokens: every log-prob is the same with the prefix cache on or off, and a
    prompt's completions are the same alone or batched with other prompts (``sazanami
    batch`` resumes rely on both)."""
    off, on = engines
    on.clear_prefix_cache()
    params = SamplingParams(n=2, seed=7, max_tokens=10, temperature=0.9)
    prompts = ["Prompt 0", "Prompt 1 is longer than the others", "Prompt 2"]
    rows = [off.rows_for([p], params.replace(seed=7 + i)) for i, p in enumerate(prompts)]
    alone = [c for r in rows for c in off.run(r)]
    together = off.run([r for rs in rows for r in rs])
    on.run(rows[0])  # warm: the chat template's blocks are cached
    cached = on.run([r for rs in rows for r in rs])
    assert sum(c.cached_tokens for c in cached) > 0
    for got in (together, cached):
        assert [(c.token_ids, c.logprobs) for c in got] == [(c.token_ids, c.logprobs) for c in alone]
