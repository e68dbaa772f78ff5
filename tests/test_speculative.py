"""Exact speculative decoding (sazanami.speculative + the row step's verify) on the tiny model.

Every test compares against plain decoding with the same seeds: speculation may change the
number of forward passes, never a token, a log-prob, a text or a finish reason.
"""

from __future__ import annotations

import json
import re

import pytest

import sazanami.engine.loop as engine_module
from sazanami.engine.loop import Engine
from sazanami.errors import ParameterError
from sazanami.islands import Constraint, Islands
from sazanami.sampling.params import SamplingParams
from sazanami.speculative import Speculative
from sazanami.speculative.adaptive import MAX_WAIT, DraftLength
from sazanami.speculative.corpus import SENTINEL, CorpusIndex, build_index
from sazanami.speculative.drafter import Drafter
from sazanami.speculative.ngrams import NgramIndex

pytestmark = pytest.mark.usefixtures("whole_drafts")  # acceptance counted without the timing-sized budget

REPEATS = "the cat sat on the mat. the cat sat on the mat. the cat sat on the mat. the dog sat"


def both(engine: Engine, prompt, params: SamplingParams, spec="prompt,siblings", **kw):
    """Completions without and with speculation (same seeds), checked identical."""
    plain = engine.generate(prompt, params, **kw)
    fast = engine.generate(prompt, params.replace(speculative=spec), **kw)
    assert len(plain) == len(fast)
    for a, b in zip(plain, fast):
        assert b.token_ids == a.token_ids
        assert b.logprobs == a.logprobs
        assert (b.text, b.finish_reason, b.spans) == (a.text, a.finish_reason, a.spans)
        assert a.drafted_tokens == 0 and 0 <= b.accepted_tokens <= b.drafted_tokens
    return plain, fast


# -- the parameter ---------------------------------------------------------------------------
def test_speculative_parses_every_spelling():
    assert SamplingParams(speculative="prompt").speculative == Speculative(("prompt",))
    assert SamplingParams(speculative=["prompt", "siblings"]).speculative.sources == ("prompt", "siblings")
    s = SamplingParams(speculative="siblings,corpus=idx,max_draft=8").speculative
    assert (s.sources, s.corpus, s.max_draft) == (("siblings", "corpus"), "idx", 8)
    s = SamplingParams(speculative='{"sources": ["corpus"], "corpus": "idx"}').speculative
    assert s == Speculative(("corpus",), corpus="idx")
    assert SamplingParams(speculative=None).speculative is None
    p = SamplingParams(speculative={"sources": ["prompt"], "max_draft": 4})
    assert SamplingParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    s = SamplingParams(speculative="prompt,exact=false").speculative
    assert s.exact is False and Speculative.parse(s.to_dict()) == s and Speculative().exact is True


@pytest.mark.parametrize(
    ("value", "param", "text"),
    [
        ("draft", "speculative.sources", "got 'draft'"),
        ({"sources": ["prompt"], "max_draft": 0}, "speculative.max_draft", "in [1, 64], got 0"),
        ({"sources": ["prompt"], "max_draft": 65}, "speculative.max_draft", "got 65"),
        ("prompt,max_draft=x", "speculative.max_draft", "integer"),
        ("corpus", "speculative.corpus", "needs speculative.corpus"),
        ({"sources": ["prompt"], "corpus": "x"}, "speculative.corpus", "lack 'corpus'"),
        ({"sources": ["prompt"], "depth": 2}, "speculative.depth", "unknown speculative key"),
        (["prompt", "prompt"], "speculative.sources", "repeats"),
        ("{bad", "speculative", "JSON"),
        ("prompt,exact=maybe", "speculative.exact", "true or false"),
        ({"sources": ["prompt"], "exact": 1}, "speculative.exact", "true or false, got 1"),
    ],
)
def test_bad_speculative_names_the_field(value, param, text):
    with pytest.raises(ParameterError, match=re.escape(text)) as e:
        SamplingParams(speculative=value)
    assert e.value.param == param


def test_beams_and_forward_noise_refuse_speculation(tiny_engine: Engine):
    with pytest.raises(ParameterError) as e, pytest.warns(DeprecationWarning):
        tiny_engine.generate("x", SamplingParams(beams={"width": 2}, speculative="prompt", max_tokens=4))
    assert e.value.param == "speculative"
    with pytest.raises(ParameterError, match="hidden") as e:
        tiny_engine.generate("x", SamplingParams(fluctuation="pink-hidden", speculative="prompt", max_tokens=4))
    assert e.value.param == "speculative"


# -- drafts --------------------------------------------------------------------------------------
def test_ngram_index_drafts_the_latest_longest_match():
    idx = NgramIndex([1, 2, 3, 4, 5, 9, 2, 3, 7, 8])
    assert idx.lookup([0, 2, 3], 4) == (2, [7, 8])  # latest occurrence of (2, 3)
    assert idx.lookup([1, 2, 3], 4) == (3, [4, 5, 9, 2])  # a longer match wins
    assert idx.lookup([4, 6], 4) == (0, [])
    idx.extend([1, 2])
    assert idx.lookup(idx.seq, 3) == (2, [3, 4, 5])  # its own tail is not a match of itself
    idx.truncate(3)
    assert idx.seq == [1, 2, 3] and idx.lookup([1, 2], 5) == (2, [3])


def test_draft_length_grows_on_acceptance_and_waits_after_failures():
    d = DraftLength(16)
    assert d.want() == 4
    d.observe(4, 4)
    assert d.want() == 8
    d.observe(8, 2)
    assert d.want() == 3
    waits = []
    for _ in range(8):
        d.observe(d.length, 0)
        n = 0
        while d.want() == 0:
            n += 1
        waits.append(n)
    assert waits == [1, 2, 4, 8, 16, 32, MAX_WAIT, MAX_WAIT] and d.length == 1
    d.observe(1, 1)
    assert d.backoff == 0 and d.want() == 2


# -- exact verification ----------------------------------------------------------------------------
def scripted(monkeypatch, future: list[list[int]], wrong_after: int | None = None, most: int = 7):
    """The engine drafts the plain run's own next tokens (all accepted), or with
    ``wrong_after`` a token that differs from the right one there (rejected from there);
    every drafted token is fed (the module's ``whole_drafts``), so every position is verified."""

    class Scripted(Drafter):
        def propose(self, outputs, room):
            drafts = []
            for i, b in enumerate(self.alive):
                n = len(outputs[i])
                d = list(future[b][n : n + min(room[i], most)])
                if wrong_after is not None and len(d) > wrong_after:
                    d[wrong_after] = (d[wrong_after] + 1) % 50
                drafts.append(d)
            return drafts

    monkeypatch.setattr(engine_module, "Drafter", Scripted)


@pytest.mark.parametrize("wrong_after", [None, 0, 2])
def test_verification_keeps_exactly_the_drafts_the_sampler_draws(tiny_engine: Engine, monkeypatch, wrong_after):
    p = SamplingParams(n=3, seed=5, max_tokens=40, temperature=0.9, ignore_eos=True)
    plain = tiny_engine.generate("hello there", p)
    scripted(monkeypatch, [c.token_ids for c in plain], wrong_after)
    _, fast = both(tiny_engine, "hello there", p)
    for c in fast:
        if wrong_after is None:  # every draft accepted: 1 + 7 tokens per forward
            assert c.accepted_tokens == c.drafted_tokens > 25
        elif wrong_after == 0:
            assert c.drafted_tokens > 0 and c.accepted_tokens == 0
        else:
            assert 0 < c.accepted_tokens < c.drafted_tokens


@pytest.mark.parametrize(
    "kw",
    [
        {"temperature": 0.0},
        {"temperature": 1.0},
        {"temperature": 0.8, "top_k": 20, "top_p": 0.9, "min_p": 0.02},
        {"temperature": 0.8, "fluctuation": "pink-temperature"},
        {"temperature": 0.8, "fluctuation": "pink-logits"},
        {"temperature": 0.8, "fluctuation": "pink-draw"},
        {"temperature": 0.8, "repetition_penalty": 1.3, "frequency_penalty": 0.5, "dry_multiplier": 0.8},
        {"temperature": 0.8, "xtc_probability": 0.5, "xtc_threshold": 0.05, "mirostat_tau": 0.0},
        {"mirostat_tau": 4.0},
        {"temperature": 0.8, "top_logprobs": 3, "trace": True},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_tokens_identical_with_speculation_on_and_off(tiny_engine: Engine, monkeypatch, kw):
    """Real prompt-lookup drafts, and the plain run's own tokens as drafts (every position verified)."""
    p = SamplingParams(n=3, seed=11, max_tokens=48, ignore_eos=True, **kw)
    plain, _ = both(tiny_engine, REPEATS, p)
    scripted(monkeypatch, [c.token_ids for c in plain], wrong_after=3)
    _, fast = both(tiny_engine, REPEATS, p)
    assert all(c.accepted_tokens > 0 for c in fast)
    if kw.get("trace"):
        assert [len(c.trace) for c in fast] == [len(c.token_ids) for c in plain]
        assert [c.top_logprobs for c in fast] == [c.top_logprobs for c in plain]


def test_greedy_repetition_is_drafted_from_the_prompt_and_output(tiny_engine: Engine):
    p = SamplingParams(seed=1, max_tokens=64, temperature=0.0, ignore_eos=True)
    _, (c,) = both(tiny_engine, REPEATS[:-4], p, spec="prompt")
    assert c.accepted_tokens > 15  # the tiny model loops ("3333…"): its own output drafts its future


def test_stop_strings_end_a_row_inside_an_accepted_draft(tiny_engine: Engine, monkeypatch):
    p = SamplingParams(n=2, seed=3, max_tokens=40, temperature=0.7, ignore_eos=True)
    plain = tiny_engine.generate(REPEATS, p)
    stop = plain[0].text[10:13]
    scripted(monkeypatch, [c.token_ids for c in plain])
    _, fast = both(tiny_engine, REPEATS, p.replace(stop=(stop,)))
    assert fast[0].finish_reason == "stop" and len(fast[0].token_ids) < len(plain[0].token_ids)


def test_max_tokens_and_eos_inside_drafts(tiny_engine: Engine, monkeypatch):
    p = SamplingParams(n=4, seed=8, max_tokens=13, temperature=1.2)
    plain = tiny_engine.generate("a b c", p)
    scripted(monkeypatch, [c.token_ids + [0] * 20 for c in plain], most=64)
    both(tiny_engine, "a b c", p)


def test_grammar_islands_verify_drafts_under_their_mask(tiny_engine: Engine, monkeypatch):
    isl = Islands(constraint=Constraint.regex(r"(ab|cd)[a-z ]{5,30}\."))
    p = SamplingParams(n=3, seed=2, max_tokens=40, temperature=1.0)
    plain = tiny_engine.generate("x", p, islands=isl)
    scripted(monkeypatch, [c.token_ids for c in plain], wrong_after=4)
    _, fast = both(tiny_engine, "x", p, islands=isl)
    assert sum(c.accepted_tokens for c in fast) > 0


def test_tool_results_are_injected_as_in_plain_decoding(tiny_engine: Engine, monkeypatch):
    from sazanami.islands import builtin_tools

    isl = Islands(tools=builtin_tools(["calc"]), constraint=Constraint.regex(r"So CALC\(1\+2\)[a-z ]{8,20}"),
                  describe_tools=False)  # fmt: skip
    p = SamplingParams(n=2, seed=4, max_tokens=40, temperature=1.0)
    plain = tiny_engine.generate("q", p, islands=isl)
    assert all(c.spans for c in plain)
    scripted(monkeypatch, [c.token_ids for c in plain])
    _, fast = both(tiny_engine, "q", p, islands=isl)
    assert all(c.accepted_tokens > 0 for c in fast)


def test_rows_of_different_prompts_and_lengths_share_the_batch(tiny_engine: Engine, monkeypatch):
    prompts = ["one", REPEATS, "three four five six seven"]
    p = SamplingParams(n=2, seed=6, max_tokens=30, temperature=0.9, ignore_eos=True)
    plain = tiny_engine.generate(prompts, p)
    scripted(monkeypatch, [c.token_ids for c in plain], wrong_after=5)
    both(tiny_engine, prompts, p)


def test_siblings_propose_each_others_continuations(tiny_engine: Engine):
    """Greedy rows of one request write the same text: a sibling ahead drafts for the others."""
    p = SamplingParams(n=4, seed=1, max_tokens=40, temperature=0.0, ignore_eos=True)
    _, solo = both(tiny_engine, "zq", p, spec="prompt")
    _, fam = both(tiny_engine, "zq", p, spec="prompt,siblings")
    assert sum(c.accepted_tokens for c in fam) >= sum(c.accepted_tokens for c in solo)


# -- the corpus index ------------------------------------------------------------------------------
@pytest.fixture
def corpus_dir(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("def add(a, b):\n    return a + b\n\n" * 3)
    (docs / "b.txt").write_text("The quick brown fox jumps over the lazy dog.\n")
    (docs / ".hidden").write_text("never indexed")
    return docs


def test_corpus_index_finds_the_longest_match_and_its_continuation(tiny_engine: Engine, corpus_dir, tmp_path):
    tok = tiny_engine.tokenizer
    header = build_index([corpus_dir], tmp_path / "idx", tok, shard=7)  # many groups
    assert [d["name"].rsplit("/", 1)[1] for d in header.documents] == ["a.txt", "b.txt"]
    index = CorpusIndex(tmp_path / "idx", tok)
    fox = tok.encode("The quick brown fox jumps over the lazy dog.\n")
    n, draft = index.lookup([7, 7] + fox[:4], 50)
    assert n == 4 and draft == fox[4:]  # to the document's end, not past it
    assert index.lookup([SENTINEL - 1, SENTINEL - 2], 5) == (0, [])
    sa = index.suffixes
    keys = [index.tokens[int(p) : int(p) + 32].tolist() for p in sa]
    keys = [k[: k.index(SENTINEL)] + [SENTINEL] if SENTINEL in k else k for k in keys]
    assert keys == sorted(keys) and len(sa) == header.tokens - 2  # every position but the sentinels


def test_corpus_errors_name_the_field(tiny_engine: Engine, corpus_dir, tmp_path):
    tok = tiny_engine.tokenizer
    with pytest.raises(ParameterError, match="no corpus index") as e:
        CorpusIndex(tmp_path / "none", tok)
    assert e.value.param == "speculative.corpus"
    build_index([corpus_dir], tmp_path / "idx", tok)
    head = tmp_path / "idx" / "header.json"
    data = json.loads(head.read_text())
    head.write_text(json.dumps(data | {"tokenizer": "0" * 64}))
    with pytest.raises(ParameterError, match="another tokenizer"):
        CorpusIndex(tmp_path / "idx", tok)
    head.write_text(json.dumps(data | {"format": 0}))
    with pytest.raises(ParameterError, match="format 0"):
        CorpusIndex(tmp_path / "idx", tok)
    head.write_text(json.dumps(data))
    with open(tmp_path / "idx" / "suffixes.u32", "ab") as f:
        f.write(b"\0\0\0\0")
    with pytest.raises(ParameterError, match="stale") as e:
        CorpusIndex(tmp_path / "idx", tok)
    assert e.value.param == "speculative.corpus"
    with pytest.raises(ParameterError) as e:
        tiny_engine.generate("x", SamplingParams(max_tokens=3, speculative=f"corpus={tmp_path / 'none'}"))
    assert e.value.param == "speculative.corpus"


def test_corpus_drafts_are_exact(tiny_engine: Engine, tmp_path):
    """A corpus holding the plain run's text drafts it; the output does not change."""
    p = SamplingParams(seed=2, max_tokens=48, temperature=0.0, ignore_eos=True)
    (plain,) = tiny_engine.generate("corpus", p)
    docs = tmp_path / "d"
    docs.mkdir()
    (docs / "out.txt").write_text("corpus " + plain.text)
    build_index([docs], tmp_path / "idx", tiny_engine.tokenizer)
    _, (c,) = both(tiny_engine, "corpus", p, spec={"sources": ["corpus"], "corpus": str(tmp_path / "idx")})
    assert c.accepted_tokens > 10


# -- the command line ---------------------------------------------------------------------------------
def test_index_command_and_generate_with_its_corpus(corpus_dir, tmp_path):
    from click.testing import CliRunner

    from sazanami.cli import main

    runner = CliRunner()
    out = tmp_path / "idx"
    r = runner.invoke(main, ["index", str(corpus_dir), "-o", str(out), "--model", "tiny-random", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["documents"][1]["name"].endswith("b.txt")
    args = ["generate", "def add", "-m", "tiny-random", "--max-tokens", "8", "--seed", "1", "--json", "--raw"]
    plain = json.loads(runner.invoke(main, args).output)["completions"][0]
    r = runner.invoke(main, [*args, "--speculative", f"prompt,corpus={out},max_draft=4"])
    fast = json.loads(r.output)["completions"][0]
    assert fast["token_ids"] == plain["token_ids"] and fast.get("drafted_tokens", 0) >= fast.get("accepted_tokens", 0)
    r = runner.invoke(main, [*args, "--speculative", f"corpus={tmp_path / 'missing'}"])
    assert r.exit_code == 2 and "no corpus index" in r.output


def test_rows_near_the_context_end_draft_only_what_fits(tiny_engine: Engine, monkeypatch):
    limit = tiny_engine.max_positions
    long = tiny_engine.tokenizer.decode(tiny_engine.encode("ab " * limit, raw=True)[: limit - 20])
    p = SamplingParams(n=2, seed=3, max_tokens=60, temperature=0.8, ignore_eos=True)
    plain = tiny_engine.generate([long, "short"], p, raw=True)
    scripted(monkeypatch, [c.token_ids for c in plain], most=16)
    _, fast = both(tiny_engine, [long, "short"], p, raw=True)
    assert fast[0].finish_reason == "length" and fast[0].prompt_tokens + len(fast[0].token_ids) <= limit + 1


# -- the HTTP API ------------------------------------------------------------------------------------
def test_server_counts_every_accepted_token_and_reports_drafts(tiny_engine: Engine):
    """A step that accepts a draft adds several tokens to a choice (regression: one per step)."""
    import urllib.request

    from sazanami.server import Limits, create_app
    from sazanami.server.testing import serving

    body = {"model": "tiny-random", "prompt": REPEATS[:-4], "max_tokens": 48, "temperature": 0, "seed": 1,
            "ignore_eos": True}  # fmt: skip

    def post(base: str, extra: dict) -> dict:
        req = urllib.request.Request(
            f"{base}/v1/completions", json.dumps(body | extra).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    with serving(create_app("tiny-random", Limits(max_tokens=64), engine=tiny_engine)) as base:
        plain, fast = post(base, {}), post(base, {"speculative": "prompt"})
    assert fast["choices"][0]["text"] == plain["choices"][0]["text"]
    assert fast["usage"]["completion_tokens"] == plain["usage"]["completion_tokens"] == 48
    details = fast["usage"]["completion_tokens_details"]
    assert details["accepted_prediction_tokens"] > 15 and details["rejected_prediction_tokens"] >= 0
    assert "completion_tokens_details" not in plain["usage"]


def test_server_drafts_from_named_indexes_only(tiny_engine: Engine, tmp_path):
    """Over HTTP ``speculative.corpus`` names one of the server's indexes (serve
    --speculative-index NAME=PATH), never a folder: the server opens no file a request names."""
    import urllib.error
    import urllib.request

    from sazanami.server import Limits, create_app
    from sazanami.server.testing import serving

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text(REPEATS * 3)
    build_index([docs], tmp_path / "idx", tiny_engine.tokenizer)
    body = {"model": "tiny-random", "prompt": REPEATS[:-4], "max_tokens": 24, "temperature": 0, "seed": 1}

    def post(base: str, spec: object) -> tuple[int, dict]:
        req = urllib.request.Request(
            f"{base}/v1/completions",
            json.dumps(body | {"speculative": spec}).encode(),
            {"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    app = create_app("tiny-random", Limits(max_tokens=64), engine=tiny_engine, indexes={"docs": str(tmp_path / "idx")})
    with serving(app) as base:
        code, named = post(base, {"sources": ["corpus"], "corpus": "docs"})
        assert code == 200 and named["usage"]["completion_tokens"] == 24
        for spec in ({"sources": ["corpus"], "corpus": str(tmp_path / "idx")}, f"corpus={tmp_path / 'idx'}"):
            code, err = post(base, spec)
            assert code == 400 and err["error"]["param"] == "speculative.corpus", err
            assert "one of this server's corpus indexes (docs)" in err["error"]["message"]
