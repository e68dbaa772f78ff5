"""The playground's defects of issue 30, in headless Chromium: exact seeds and "repeat this run",
values off the inputs' old 0.05 grid, trees and trace plots whose lines cross no label, progress
while a search runs and a clean stop, errors at their field (multi-line ones kept), fields a mode
does not use greyed out, empty prompts, the favicon, the API docs offline, the API key asked once;
and the chat mode, the run history and the export.

One server (tiny random model) and one browser for the module; every request that leaves the
server's origin is refused, as on a machine without internet. Needs Debian's ``chromium`` and
Playwright for Python, like tests/test_server_browser.py.
"""

from __future__ import annotations

import json

import pytest

from sazanami.seeds import derive_seed
from sazanami.server import Limits, create_app
from sazanami.server.testing import serving

BIG = 8088524283061314308  # above 2^53: a JavaScript number would show 8088524283061315000


def _offline(context, url: str) -> list[str]:
    """Refuse every request that leaves ``url``'s origin; returns the list of refused URLs."""
    refused: list[str] = []

    def handle(route):
        if route.request.url.startswith(url):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    context.route("**/*", handle)
    return refused


@pytest.fixture(scope="module")
def page(app_url, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    _offline(context, app_url)
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    errors: list[str] = []
    failed: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("response", lambda r: r.status == 404 and failed.append(r.url))
    pg.goto(app_url + "/")
    pg.wait_for_selector("#preset option[value='pink-temperature']", state="attached")
    yield pg
    context.close()
    assert not errors, errors
    assert not failed, failed  # /favicon.ico among them before issue 30


def _form(page, **values) -> None:
    """Reset the form to a small, fast run, then set ``values`` (element id → value)."""
    if page.locator("input[name=mode]").count():  # (the page before issue 30 had no modes)
        page.check("input[name=mode][value=chat]")
        if page.locator("#chat button.repeat").count():
            page.click("#chat button.repeat")  # a new conversation
    defaults = {"prompt": "Write one sentence about the sea.", "n": "2", "max_tokens": "6", "temperature": "0.7",
                "seed": "", "sigma": "", "beta": "", "strategy": "", "budget": "48", "scorer": "logprob", "regex": ""}  # fmt: skip
    defaults.update(values)
    strategy = defaults.pop("strategy")
    page.select_option("#strategy", strategy)
    for key, value in defaults.items():
        if page.is_enabled(f"#{key}"):
            page.fill(f"#{key}", value)


def _run(page, done: str = "variants") -> None:
    """Click Run and wait for the variants (all done) or the search tree."""
    page.click("#run")
    if done == "variants":
        page.wait_for_function(
            "document.querySelectorAll('.variant').length > 0 && "
            "[...document.querySelectorAll('.variant')].every((c) => c.classList.contains('done'))",
            timeout=30_000,
        )
    else:
        page.wait_for_selector(".tree .node.winner", timeout=60_000)
    page.wait_for_function("!document.getElementById('run').disabled")


def _sse(text: str) -> list[dict]:
    """The JSON chunks of a server-sent event stream (Python's json keeps 64-bit integers exact)."""
    out = []
    for line in text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[6:]))
    return out


# -- 1. seeds ------------------------------------------------------------------------------------
def test_a_large_seed_is_sent_and_shown_exactly(page):
    _form(page, seed=str(BIG))
    with page.expect_request("**/v1/chat/completions") as req:
        _run(page)
    assert json.loads(req.value.post_data)["seed"] == BIG
    assert page.inner_text("#runseed") == f"run seed {BIG}"
    for i in range(2):  # each variant's own seed, derived from the request's
        assert page.inner_text(f"#variant-{i} .label") == f"variant {i} · seed {derive_seed(BIG, 0, i)}"


def test_a_random_seed_is_shown_and_repeat_reruns_the_same_run(page):
    _form(page, n="3")
    with page.expect_response("**/v1/chat/completions") as resp:
        _run(page)
    chunks = _sse(resp.value.text())
    seed = chunks[0]["seed"]
    assert page.inner_text("#runseed") == f"run seed {seed}"
    seeds = {c["index"]: c["seed"] for chunk in chunks for c in chunk["choices"] if "seed" in c}
    for i, s in seeds.items():
        assert page.inner_text(f"#variant-{i} .label").endswith(f"seed {s}")
    texts = [page.inner_text(f"#variant-{i} .text") for i in range(3)]
    page.fill("#seed", "")
    page.fill("#n", "1")
    page.click("#variant-2 button.repeat")  # puts the whole run back: its settings and its seed
    assert page.input_value("#seed") == str(seed) and page.input_value("#n") == "3"
    _run(page)
    assert [page.inner_text(f"#variant-{i} .text") for i in range(3)] == texts


def test_search_seeds_are_exact_on_the_winner_and_the_nodes(page):
    _form(page, strategy="best_of_n", seed=str(BIG), budget="24", max_tokens="4")
    with page.expect_response("**/v1/chat/completions") as resp:
        _run(page, done="tree")
    body = next(c for c in _sse(resp.value.text()) if "search" in c)  # a search streams: its last chunk
    tree = body["search"]["tree"]
    assert body["seed"] == BIG and page.inner_text("#runseed") == f"run seed {BIG}"
    assert page.inner_text("#variant-0 .label") == f"winner · seed {body['choices'][0]['seed']}"
    best = tree["nodes"][tree["best"]]
    assert f"seed {best['seed']} " in page.inner_text("#detail .facts")
    other = next(n for n in tree["nodes"] if n["parent"] is not None and n["id"] != tree["best"])
    page.click(f".tree .node[data-id='{other['id']}']")
    assert f"seed {other['seed']} " in page.inner_text("#detail .facts")
    page.fill("#seed", "")
    page.click("#detail button.repeat")
    assert page.input_value("#seed") == str(BIG)


# -- 2. values off a grid ------------------------------------------------------------------------
def test_values_off_a_grid_can_be_run(page):
    _form(page, n="1", temperature="0.73", sigma="0.33", beta="1.25")
    with page.expect_request("**/v1/chat/completions", timeout=5_000) as req:
        _run(page)
    sent = json.loads(req.value.post_data)
    assert sent["temperature"] == 0.73
    assert sent["fluctuation"]["temperature"]["sigma"] == 0.33 and sent["fluctuation"]["temperature"]["beta"] == 1.25


# -- 4. trees and trace plots: no line crosses a label --------------------------------------------
CROSSINGS = """(box) => {
  // Points along every edge of the tree, tested against every node label's box (SVG user units).
  const svg = document.querySelector(box + ' svg');
  const labels = [...svg.querySelectorAll('.node')].map((g) => {
    const m = g.transform.baseVal.consolidate().matrix, b = g.querySelector('text').getBBox();
    return { x: b.x + m.e + 1, y: b.y + m.f + 1, w: b.width - 2, h: b.height - 2, t: g.textContent };
  });
  const hits = [];
  for (const path of svg.querySelectorAll('path.edge')) {
    const len = path.getTotalLength();
    for (let s = 0; s <= len; s += 2) {
      const p = path.getPointAtLength(s);
      for (const r of labels)
        if (p.x > r.x && p.x < r.x + r.w && p.y > r.y && p.y < r.y + r.h) { hits.push(r.t); break; }
    }
  }
  return [...new Set(hits)];
}"""

PLOT_OVERLAPS = """() => {
  // Every trace plot: each label ends left of where its rows' lines begin.
  const bad = [];
  for (const svg of document.querySelectorAll('svg.plot')) {
    const start = Math.min(...[...svg.querySelectorAll('line.axis')].map((l) => l.x1.baseVal.value));
    for (const t of svg.querySelectorAll('text'))
      if (t.getBBox().x + t.getBBox().width > start) bad.push(t.textContent);
  }
  return bad;
}"""


def test_tree_edges_and_plot_lines_cross_no_label(page):
    _form(page, strategy="anneal", seed="3", budget="60", max_tokens="5")
    _run(page, done="tree")
    assert page.locator(".tree .node").count() >= 4
    assert page.evaluate(CROSSINGS, "#tree") == []
    assert page.locator("svg.plot").count() >= 2  # the winner's trace and the node's
    assert page.evaluate(PLOT_OVERLAPS) == []


# -- 6. progress and stop ------------------------------------------------------------------------
def _slow(page, bytes_per_s: int) -> None:
    """Throttle what the page downloads (so a run is still going when Stop is clicked); -1 ends it."""
    if not hasattr(page, "_cdp"):
        page._cdp = page.context.new_cdp_session(page)
        page._cdp.send("Network.enable")
    cdp = page._cdp
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": bytes_per_s, "uploadThroughput": -1},
    )


def test_a_search_shows_progress_and_a_stopped_stream_marks_its_cards(page):
    _form(page, strategy="anneal", budget="400", max_tokens="40")
    _slow(page, 300)
    page.click("#run")
    page.wait_for_selector("#progress", state="visible", timeout=5_000)
    page.wait_for_function("/anneal running · [0-9.]+ s/.test(document.getElementById('progress-text').textContent)")
    assert page.is_hidden("#variants-box")  # no empty heading while the search runs
    page.click("#stop")
    page.wait_for_function("document.getElementById('status').textContent === 'stopped'")
    assert page.is_hidden("#progress")
    _form(page, n="3", max_tokens="40")
    page.click("#run")
    page.wait_for_selector("#variant-0")
    page.click("#stop")
    page.wait_for_function("document.getElementById('status').textContent === 'stopped'")
    states = [page.inner_text(f"#variant-{i} .state") for i in range(page.locator(".variant").count())]
    _slow(page, -1)
    assert "…" not in states and "stopped" in states


FIRST_NODES = """() => {
  // What the tree panel showed when its first node (past the prompt) appeared.
  window._firstNodes = null;
  const tree = document.getElementById('tree');
  window._treeWatch = new MutationObserver(() => {
    const nodes = tree.querySelectorAll('.node:not(.root)').length;
    if (window._firstNodes || !nodes) return;
    window._firstNodes = { nodes, winner: Boolean(tree.querySelector('.node.winner')),
                           running: document.getElementById('run').disabled };
  });
  window._treeWatch.observe(tree, { childList: true, subtree: true });
}"""


def test_a_search_draws_its_tree_as_it_grows(page):
    """The search streams its nodes (issue 30): the tree is drawn while the search runs, and the
    progress line counts nodes and tokens of the budget; the winner comes at the end."""
    _form(page, strategy="anneal", seed="5", budget="240", max_tokens="10")
    page.evaluate(FIRST_NODES)
    _slow(page, 20_000)  # the stream's chunks arrive over a few seconds, as from a slower model
    try:
        with page.expect_response("**/v1/chat/completions") as resp:
            page.click("#run")
            page.wait_for_function(
                "/anneal running · [0-9.]+ s · [0-9]+ nodes · [0-9]+ of 240 tokens/"
                ".test(document.getElementById('progress-text').textContent)",
                timeout=30_000,
            )
            page.wait_for_selector(".tree .node.winner", timeout=60_000)
    finally:
        _slow(page, -1)
        first = page.evaluate("window._treeWatch.disconnect(), window._firstNodes")
    tree = next(c for c in _sse(resp.value.text()) if "search" in c)["search"]["tree"]
    assert first["running"] and not first["winner"], first  # drawn before the search's end
    assert first["nodes"] < len(tree["nodes"]) - 1, first
    assert page.locator(".tree .node").count() == len(tree["nodes"])
    assert page.text_content("#variant-0 .text") == tree["nodes"][tree["best"]]["text"]  # the winner, whole
    assert page.get_attribute("#progress", "aria-valuenow") is not None
    page.wait_for_function("!document.getElementById('run').disabled")


# -- 7. errors at their field ----------------------------------------------------------------------
def test_server_errors_highlight_their_field_and_keep_their_lines(page):
    _form(page, strategy="best_of_n", budget="100000")
    _run_error(page)
    assert page.get_attribute("#budget", "aria-invalid") == "true"
    assert "search.budget" in page.inner_text("#budget + .field-error")
    _form(page, n="1", regex="a(b")
    _run_error(page)
    message = page.locator("#regex + .field-error")
    assert message.inner_text().count("\n") >= 3 and "^" in message.inner_text()  # the marker under its line
    assert message.evaluate("(e) => getComputedStyle(e).whiteSpace") in ("pre", "pre-wrap")
    assert page.get_attribute("#budget", "aria-invalid") is None  # the earlier error is gone


def _run_error(page) -> None:
    page.click("#run")
    page.wait_for_selector("#status.error", timeout=10_000)
    page.wait_for_function("!document.getElementById('run').disabled")


def test_a_value_the_page_refuses_replaces_the_last_error(page):
    _form(page, strategy="best_of_n", budget="100000")
    _run_error(page)
    _form(page, n="0")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.click("#run")
    page.wait_for_selector("#n[aria-invalid=true]", timeout=3_000)
    assert "search.budget" not in page.inner_text("#status")
    assert "n must be at least 1" in page.inner_text("#n + .field-error")
    assert not [u for u in requests if "completions" in u]


# -- 8. fields a mode does not use -----------------------------------------------------------------
def test_fields_a_mode_ignores_are_disabled(page):
    page.select_option("#strategy", "anneal")
    assert page.is_disabled("#n") and page.is_enabled("#budget") and page.is_enabled("#scorer")
    assert "n is not used" in page.inner_text("#search-note")
    page.select_option("#strategy", "")
    assert page.is_enabled("#n") and page.is_disabled("#budget") and page.is_disabled("#scorer")


# -- 11. empty prompt, favicon ---------------------------------------------------------------------
def test_an_empty_prompt_is_not_sent(page):
    _form(page, prompt="  \n ")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.click("#run")
    page.wait_for_selector("#prompt[aria-invalid=true]", timeout=3_000)
    assert "message is empty" in page.inner_text("#prompt + .field-error")
    assert not [u for u in requests if "completions" in u]


def test_favicon(page, app_url):
    res = page.request.get(app_url + "/favicon.ico")
    assert res.status == 200 and res.headers["content-type"].startswith("image/")
    assert page.locator("link[rel=icon]").count() == 1


# -- 10. API docs offline --------------------------------------------------------------------------
def test_api_docs_render_offline(browser, app_url):
    context = browser.new_context()
    refused = _offline(context, app_url)
    pg = context.new_page()
    pg.goto(app_url + "/docs")
    pg.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
    assert "sazanami" in pg.inner_text(".swagger-ui .info .title")
    assert pg.locator(".opblock-summary-path[data-path='/v1/chat/completions']").count() == 1
    pg.goto(app_url + "/redoc")
    pg.wait_for_selector("h1:has-text('sazanami')", timeout=15_000)
    # only ReDoc's "powered by" logo (an image, its absence harmless) points elsewhere
    assert [u for u in refused if not u.endswith(".svg")] == []
    context.close()


# -- the API key, asked once for both pages ---------------------------------------------------------
def test_the_api_key_is_asked_once_for_both_pages(browser, tiny_engine):
    app = create_app("tiny-random", Limits(max_tokens=64), engine=tiny_engine, api_key="s3cret")
    with serving(app) as url:
        context = browser.new_context()
        pg = context.new_page()
        asked: list[str] = []

        def answer(dialog):
            asked.append(dialog.message)
            dialog.accept("s3cret")

        pg.on("dialog", answer)
        pg.goto(url + "/")
        pg.wait_for_selector("#preset option[value='pink-temperature']", state="attached")
        pg.fill("#max_tokens", "4")
        pg.fill("#n", "1")
        pg.click("#run")
        pg.wait_for_selector(".variant.done", timeout=20_000)
        pg.click("a[href='/flows']")
        pg.wait_for_selector(".fnode[data-id='hot']", timeout=20_000)
        assert len(asked) == 1 and "API key" in asked[0]
        context.close()


# -- expected of a playground: chat, history, export -----------------------------------------------
def test_chat_mode_sends_the_conversation(page):
    _form(page, n="2", seed="11")
    page.check("input[name=mode][value=chat]")
    page.fill("#prompt", "Hello there.")
    _run(page)
    reply = page.inner_text("#variant-1 .text")
    page.click("#variant-1 button.reply")
    assert page.locator("#chat .msg").count() == 2 and page.input_value("#prompt") == ""
    page.fill("#prompt", "And then?")
    with page.expect_request("**/v1/chat/completions") as req:
        _run(page)
    sent = json.loads(req.value.post_data)["messages"]
    assert sent == [
        {"role": "user", "content": "Hello there."},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "And then?"},
    ]
    page.click("#chat button.repeat")  # a new conversation
    assert page.locator("#chat .msg").count() == 0 and page.is_hidden("#chat")


def test_completion_mode_continues_the_prompt_without_a_template(page):
    _form(page, n="2", seed="5")
    page.check("input[name=mode][value=completion]")
    page.fill("#prompt", "Once upon a time")
    with page.expect_request("**/v1/completions") as req:
        _run(page)
    sent = json.loads(req.value.post_data)
    assert sent["prompt"] == "Once upon a time" and "messages" not in sent
    assert page.inner_text("#runseed") == "run seed 5" and page.inner_text("#variant-1 .text")
    _form(page, strategy="best_of_n", seed="5", budget="24", max_tokens="4")
    page.check("input[name=mode][value=completion]")
    with page.expect_request("**/v1/completions"):
        _run(page, done="tree")
    assert page.inner_text("#variant-0 .label").startswith("winner · seed")


def test_runs_are_kept_in_the_browser_and_exported(page, tmp_path):
    _form(page, n="1", seed=str(BIG), prompt="A run to keep.")
    page.check("input[name=mode][value=completion]")  # restored with the rest of the form
    _run(page)
    text = page.inner_text("#variant-0 .text")
    page.reload()
    page.wait_for_selector("#preset option[value='pink-temperature']", state="attached")
    page.click("#history-box summary")
    page.click("#history li:first-child button")
    assert page.input_value("#prompt") == "A run to keep." and page.input_value("#seed") == str(BIG)
    assert page.is_checked("input[name=mode][value=completion]")
    with page.expect_download() as dl:
        _run(page)
        page.click("#export")
    dl.value.save_as(tmp_path / "run.json")
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["request"]["seed"] == BIG and doc["request"]["prompt"] == "A run to keep."
    assert "/v1/completions" in doc["rerun"]
    assert doc["outputs"][0]["text"] == text  # the same seed reran the same text
    saved = json.loads(page.evaluate("localStorage.getItem('sazanami-playground-runs')"))
    assert saved[0]["seed"] == BIG
