"""Tool registry, call detection, argument parsing, CALC, the corpus and safe execution (no model)."""

from __future__ import annotations

import json
import time

import pytest

from sazanami.errors import ParameterError
from sazanami.islands import CallSyntax, Corpus, Islands, ToolError, ToolRegistry, builtin_tools, calc
from sazanami.islands.tools import Call, CallWatcher, run_calls


def stream_calls(text: str, syntax: CallSyntax | None = None) -> list[Call]:
    """Feed ``text`` one character at a time, like a row growing; every call reported once."""
    w = CallWatcher(syntax or CallSyntax())
    found = []
    for k in range(1, len(text) + 1):
        call = w.find(text[:k])
        if call is not None:
            found.append(call)
            w.settle(call.end)
    return found


def test_watcher_finds_each_complete_call_once_as_it_closes():
    text = 'So CALC((1+2)*3) then SEARCH(Kool\'s beam search) and print(x) and SEARCH("a)b") done'
    calls = stream_calls(text)
    assert [(c.name, c.args) for c in calls] == [
        ("CALC", "(1+2)*3"),
        ("SEARCH", "Kool's beam search"),
        ("SEARCH", '"a)b"'),
    ]
    assert text[calls[0].start : calls[0].end] == "CALC((1+2)*3)"


def test_watcher_ignores_glued_names_and_injected_text():
    assert stream_calls("xCALC(1) MyCALC(2)") == []
    w = CallWatcher(CallSyntax())
    text = "CALC(1+1) => CALC(9)\n"
    w.settle(len(text))  # the engine settles past what it injected
    assert w.find(text) is None
    assert w.find(text + "LOAD(a)") == Call("LOAD", "a", len(text), len(text) + 7)


def test_watcher_abandons_overlong_calls():
    syntax = CallSyntax(max_args_chars=10)
    assert stream_calls("CALC(" + "1" * 20 + ") CALC(2)", syntax) == [Call("CALC", "2", 27, 34)]


def test_custom_syntax():
    syntax = CallSyntax(prefix="<<", open=" ", close=">>", result_prefix=" = ")
    assert [(c.name, c.args) for c in stream_calls("a <<CALC 2*(3+4)>> b", syntax)] == [("CALC", "2*(3+4)")]
    assert syntax.format_call("CALC", "1") == "<<CALC 1>>" and syntax.format_result("7") == " = 7\n"
    with pytest.raises(ParameterError, match="close"):
        CallSyntax(close="")


def test_registry_typed_arguments_are_parsed_not_evaluated():
    tools = ToolRegistry()

    @tools.register(example="2, 3")
    def power(base: float, exponent: int = 2, label: str = "") -> str:
        """Raise base to an integer power."""
        return f"{label}{base**exponent:g}"

    t = tools.get("POWER")
    assert t is not None and t.description == "Raise base to an integer power."
    assert t.parse("2, 3") == ([2.0, 3], {})
    assert t.parse("2, label='x, y'") == ([2.0], {"label": "x, y"})
    with pytest.raises(ToolError, match="expected int"):
        t.parse("2, __import__('os')")
    with pytest.raises(ToolError, match="missing"):
        t.parse("")
    assert "POWER(base, exponent, label): Raise base" in tools.describe()
    assert "Example: POWER(2, 3)" in tools.describe()


def test_single_string_argument_gets_the_whole_text():
    tools = ToolRegistry()
    tools.register(lambda q: q, name="ECHO")
    t = tools.get("ECHO")
    assert t is not None
    assert t.parse(" pink, brown noise ") == (["pink, brown noise"], {})
    assert t.parse("'quoted'") == (["quoted"], {})


def test_registry_rejects_bad_names_and_varargs():
    tools = ToolRegistry()
    with pytest.raises(ParameterError, match="identifier"):
        tools.register(lambda x: x, name="not a name")
    with pytest.raises(ParameterError, match="args"):
        tools.register(lambda *x: x, name="VAR")


@pytest.mark.parametrize(
    ("expr", "value"),
    [("1+2", "3"), ("17*23", "391"), ("2**10", "1024"), ("7/2", "3.5"), ("(1+2)*-3", "-9"), ("sqrt(16)", "4"),
     ("2^3", "8"), ("10 % 4 + 9 // 2", "6"), ("round(pi, 3)", "3.142"), ("0.1+0.2", "0.3")],
)  # fmt: skip
def test_calc(expr, value):
    assert calc(expr) == value


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("__import__('os').system('touch /tmp/x')", "not arithmetic"),
        ("open('/etc/passwd').read()", "not arithmetic"),
        ("(1).__class__", "not arithmetic"),
        ("[x for x in range(9)]", "not arithmetic"),
        ("'a' * 3", "not arithmetic"),
        ("9**9**9", "exponent too large"),
        ("1/0", "division by zero"),
        ("1 +", "cannot parse"),
        ("2**4000 * 2**4000", "too large"),
        ("(" * 240 + "1" + ")" * 240, "cannot parse"),
    ],
)
def test_calc_refuses(expr, message):
    with pytest.raises(ToolError, match=message):
        calc(expr)


def test_run_calls_errors_timeouts_unknown_cache_and_limits():
    tools = ToolRegistry()
    ran = []

    @tools.register(timeout=0.2)
    def slow(x: str) -> str:
        time.sleep(3.0)
        return "late"

    @tools.register
    def boom(x: str) -> str:
        raise RuntimeError("kaput")

    @tools.register
    def big(x: str) -> str:
        ran.append(x)
        return "y" * 500

    calls = [
        (tools.get("SLOW"), Call("SLOW", "1", 0, 7)),
        (tools.get("BOOM"), Call("BOOM", "1", 0, 7)),
        (None, Call("NOPE", "1", 0, 7)),
        (tools.get("BIG"), Call("BIG", "a", 0, 6)),
        (tools.get("BIG"), Call("BIG", " a ", 0, 8)),  # the same call: runs once
    ]
    cache: dict = {}
    out = run_calls(calls, tools, default_timeout=5.0, max_chars=100, cache=cache)
    assert out[0].seconds < 2.0  # the 3 s tool was not waited for
    assert out[0].text == "error: timed out after 0.2s" and out[0].error
    assert out[1].text == "error: RuntimeError: kaput"
    assert out[2].text.startswith("error: unknown tool NOPE (available: SLOW, BOOM, BIG)")
    assert out[3].text == "y" * 100 + "…" and not out[3].error
    assert out[4].cached and out[4].text == out[3].text
    assert ran == ["a"]
    again = run_calls([(tools.get("BIG"), Call("BIG", "a", 0, 6))], tools, 5.0, 100, cache)
    assert again[0].cached and ran == ["a"]


def test_corpus_folder_and_jsonl(tmp_path):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "pink.txt").write_text("Pink noise has a power spectrum that falls as one over f.")
    (folder / "brown.txt").write_text("Brown noise is integrated white noise, a random walk.")
    (folder / "sub" / "cats.txt").write_text("Cats are small carnivorous mammals.")
    corpus = Corpus.load(folder)
    assert len(corpus) == 3
    assert corpus.search("pink spectrum")[0] == "pink"
    assert corpus.search("mammals") == ["sub/cats"]
    assert corpus.search("zzzz") == []
    assert corpus.get("brown").startswith("Brown noise")
    with pytest.raises(ToolError, match="no document"):
        corpus.get("nope")
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("\n".join(json.dumps({"id": i, "text": t}) for i, t in [(12, "pink noise"), (7, "white noise")]))
    tools = builtin_tools(["calc", "search", "load"], Corpus.load(jsonl))
    assert tools.names == ["CALC", "SEARCH", "LOAD"]
    hits = run_calls([(tools.get("SEARCH"), Call("SEARCH", "pink noise", 0, 1))], tools, 5.0, 1000)
    assert hits[0].text == "[12, 7]"
    with pytest.raises(ParameterError, match="corpus"):
        Corpus.load(tmp_path / "missing")
    with pytest.raises(ParameterError, match="needs a corpus"):
        builtin_tools(["search"])
    with pytest.raises(ParameterError, match="unknown tool"):
        builtin_tools(["shell"])


def test_islands_validation_and_preamble():
    with pytest.raises(ParameterError, match=r"max_calls must be in \[0, 1000\], got -1"):
        Islands(max_calls=-1)
    with pytest.raises(ParameterError, match="timeout"):
        Islands(timeout=0)
    tools = ToolRegistry()
    tools.register(lambda x: x, name="lower")
    with pytest.raises(ParameterError, match="name_pattern"):
        Islands(tools=tools)
    isl = Islands(tools=builtin_tools(["calc"]))
    chat = isl.apply_to_prompt("What is 2+2?")
    assert isinstance(chat, list) and chat[0]["role"] == "system" and "CALC(expr)" in chat[0]["content"]
    assert isl.apply_to_prompt("Q", raw=True).endswith("\n\nQ")
    merged = isl.apply_to_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}])
    assert merged[0]["content"].startswith("Be brief.\n\nYou can use tools") and len(merged) == 2
    assert Islands(tools=builtin_tools(["calc"]), describe_tools=False).apply_to_prompt("Q") == "Q"


def test_hanging_tools_do_not_pile_up_threads(monkeypatch):
    """Past MAX_STRAY_CALLS timed-out calls still running, new calls are refused (and allowed again after)."""
    import threading

    from sazanami.islands import tools as tools_module

    before = tools_module._strays()  # an earlier test's slow tool may still be sleeping
    monkeypatch.setattr(tools_module, "MAX_STRAY_CALLS", before + 2)
    release = threading.Event()
    tools = ToolRegistry()

    @tools.register(timeout=0.05)
    def hang(x: str) -> str:
        release.wait(10)
        return "done"

    try:
        out = run_calls([(tools.get("HANG"), Call("HANG", str(i), 0, 7)) for i in range(2)], tools, 5.0, 100)
        assert all(r.text == "error: timed out after 0.05s" for r in out)
        (refused,) = run_calls([(tools.get("HANG"), Call("HANG", "x", 0, 7))], tools, 5.0, 100)
        assert refused.error and f"{before + 2} earlier tool calls are still running" in refused.text
    finally:
        release.set()
    deadline = time.time() + 5
    while tools_module._strays() > before and time.time() < deadline:
        time.sleep(0.01)
    (again,) = run_calls([(tools.get("HANG"), Call("HANG", "y", 0, 7))], tools, 5.0, 100)
    assert again.text == "done"


def test_copy_inserts_a_verbatim_span_by_offset_or_by_quoted_text(tmp_path):
    text = "header\n" + "".join(f"line {i:03d}:  two  spaces kept\n" for i in range(40))
    (tmp_path / "x003.txt").write_text(text)
    corpus = Corpus.load(tmp_path)
    assert corpus.span("x003", 489, 400) == text[489:889]  # seed 002's "400 bytes at offset 489"
    assert corpus.span("x003", "line 010:", 20) == text[text.index("line 010:") :][:20]
    tools = builtin_tools(["copy"], corpus)
    (by_offset, by_text) = run_calls(
        [
            (tools.get("COPY"), Call("COPY", "x003, 489, 400", 0, 1)),
            (tools.get("COPY"), Call("COPY", 'x003, "line 010:", 20', 0, 1)),
        ],
        tools,
        5.0,
        1000,
    )
    assert by_offset.text == text[489:889] and not by_offset.error
    assert by_text.text == text[text.index("line 010:") :][:20]
    for args, message in [
        (("nope", 0, 5), "no document"),
        (("x003", len(text), 5), rf"start must be in \[0, {len(text) - 1}\]"),
        (("x003", 0, 0), r"length must be in \[1, 4000\], got 0"),
        (("x003", 0, 4001), r"length must be in \[1, 4000\]"),
        (("x003", "not in it", 5), "does not contain"),
    ]:
        with pytest.raises(ToolError, match=message):
            corpus.span(*args)
