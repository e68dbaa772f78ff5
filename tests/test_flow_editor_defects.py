"""The flow editor's defects of issue 30, in headless Chromium: exact seeds, a malformed "other
fields (JSON)" box is an error on its node, wires back to the left go round the nodes, empty and
malformed files say so with all their lines, the canvas stays put under a long status, candidates
and the finished tree come into view, node summaries stay clear of the output port, the example
list lets go of an example once a file is opened.

One server (tiny random model) and one browser for the module. Needs Debian's ``chromium`` and
Playwright for Python, like tests/test_flows_browser.py.
"""

from __future__ import annotations

import json

import pytest
from test_playground_defects import BIG, CROSSINGS  # tests/ is on the path (no package)

TINY = f"""name: tiny
prompt: "Say hi."
seed: {BIG}
budget: 300
params: {{max_tokens: 6}}
scorer: logprob
steps:
  - generate: {{id: gen, n: 3}}
  - score: {{id: rate}}
  - select: {{id: pick, k: 1}}
"""
W, H = 178, 66  # a node's size on the canvas (flows.js)


@pytest.fixture(scope="module")
def page(app_url, browser):
    pg = browser.new_page(viewport={"width": 1400, "height": 900})
    pg.set_default_timeout(10_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(app_url + "/flows")
    pg.wait_for_selector(".fnode[data-id='hot']")
    yield pg
    pg.close()
    assert not errors, errors


def _open(page, name: str, text: str) -> None:
    """Open ``text`` as the file ``name`` (the Open… button's file input)."""
    page.set_input_files("#file", {"name": name, "mimeType": "text/plain", "buffer": text.encode()})


def _status(page, start: str) -> str:
    page.wait_for_function(
        f"document.getElementById('status').textContent.startsWith({json.dumps(start)})", timeout=15_000
    )
    return page.get_attribute("#status", "title") or page.inner_text("#status")


def _example(page, name: str = "hot_and_cold.yaml") -> None:
    page.select_option("#examples", name)
    _status(page, "valid")


def _run(page) -> dict:
    """Run the flow on the canvas; the flow.result event, as Python reads it (exact integers)."""
    with page.expect_response("**/v1/flows/run") as resp:
        page.click("#run")
    page.wait_for_selector("#result .tree .node.winner", timeout=60_000)
    page.wait_for_function("!document.getElementById('run').disabled")
    lines = [x[6:] for x in resp.value.text().splitlines() if x.startswith("data: {")]
    return next(e for e in map(json.loads, lines) if e["object"] == "flow.result")


def _select(page, node_id: str) -> None:
    page.click(f".fnode[data-id='{node_id}'] text.title", force=True)
    page.wait_for_selector(f"#form fieldset[data-node='{node_id}']")


# -- 1. seeds ------------------------------------------------------------------------------------
def test_a_flow_seed_is_kept_sent_and_shown_exactly(page):
    _open(page, "tiny.yaml", TINY)
    _status(page, "valid · 3 steps")
    page.click("#canvas", position={"x": 5, "y": 5})  # nothing selected: the flow's own form
    assert page.input_value("#form input[name=seed]") == str(BIG)
    with page.expect_request("**/v1/flows/run") as req:
        result = _run(page)
    assert json.loads(req.value.post_data)["flow"]["seed"] == BIG
    assert result["seed"] == BIG and page.inner_text("#spend").endswith(f"seed {BIG}")
    best = result["tree"]["nodes"][result["best"]]
    assert f"seed {best['seed']} " in page.inner_text("#detail .facts")


# -- 3. a malformed "other fields (JSON)" box ----------------------------------------------------
def test_malformed_other_fields_are_an_error_on_their_node(page):
    _open(page, "tiny.yaml", TINY)
    _status(page, "valid · 3 steps")
    _select(page, "gen")
    page.fill("#form textarea[name=other]", '{"stop": ["x"')
    page.press("#form textarea[name=other]", "Tab")  # the change event
    assert "other fields (JSON) of gen" in _status(page, "invalid")
    page.wait_for_selector(".fnode.error[data-id='gen']")
    assert page.input_value("#form textarea[name=other]") == '{"stop": ["x"'  # kept, to be fixed
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.click("#run")
    page.wait_for_timeout(300)
    assert not [u for u in requests if u.endswith("/v1/flows/run")]
    page.fill("#form textarea[name=other]", '{"stop": ["x"]}')
    page.press("#form textarea[name=other]", "Tab")
    _status(page, "valid · 3 steps")
    assert page.locator(".fnode.error").count() == 0


# -- 5. wires back to the left ---------------------------------------------------------------------
WIRES = """([W, H]) => {
  // Each wire's points, checked against every node's body (inset 3 px: its ports are on the edge):
  // a wire may not run behind a node, its own two included.
  const rects = [...document.querySelectorAll('.fnode')].map((g) => {
    const m = g.transform.baseVal.consolidate().matrix;
    return { id: g.dataset.id, x: m.e + 3, y: m.f + 3, w: W - 6, h: H - 6 };
  });
  const bad = [];
  for (const path of document.querySelectorAll('#wires path.wire:not(.hit)')) {
    const len = path.getTotalLength();
    for (let s = 0; s <= len; s += 2) {
      const p = path.getPointAtLength(s);
      const r = rects.find((r) => p.x > r.x && p.x < r.x + r.w && p.y > r.y && p.y < r.y + r.h);
      if (r) { bad.push(`${path.dataset.from}→${path.dataset.to} behind ${r.id}`); break; }
    }
  }
  return bad;
}"""


def test_wires_back_to_the_left_go_round_the_nodes(page):
    _example(page)
    pick3 = page.locator(".fnode[data-id='pick3']").bounding_box()
    combine = page.locator(".fnode[data-id='combine']").bounding_box()
    assert combine["x"] < pick3["x"]  # the wire goes back to the left (the next band)
    assert page.evaluate(WIRES, [W, H]) == []
    # it leaves pick3's output port to the right and enters combine's input port from the left
    ends = page.evaluate("""() => {
      const p = document.querySelector('#wires path.wire[data-from=pick3][data-to=combine]'), n = p.getTotalLength();
      return [0, 12, n - 12, n].map((s) => p.getPointAtLength(s)).map((q) => ({ x: q.x, y: q.y }));
    }""")
    assert ends[1]["x"] > ends[0]["x"] and abs(ends[1]["y"] - ends[0]["y"]) < 1
    assert ends[2]["x"] < ends[3]["x"] and abs(ends[2]["y"] - ends[3]["y"]) < 1


# -- 7. empty and malformed files ------------------------------------------------------------------
def test_an_empty_file_and_a_yaml_error_say_what_is_wrong(page):
    _example(page)
    _open(page, "empty.yaml", "  \n")
    assert _status(page, "cannot open") == "cannot open empty.yaml: the file is empty"
    _open(page, "bad.yaml", "name: bad\nsteps:\n  - generate: {n: 2\n  - score: {}\n")
    message = _status(page, "cannot open bad.yaml")
    assert message.count("\n") >= 2  # YAML's own lines, with its marks
    shown = page.locator("#message .err")
    assert shown.is_visible() and shown.inner_text().count("\n") >= 2


# -- 9. layout -----------------------------------------------------------------------------------
def test_a_long_status_does_not_move_the_canvas(page):
    _example(page)
    top = page.locator("#canvas-box").bounding_box()["y"]
    _open(page, "bad.yaml", "name: bad\nsteps:\n  - generate: {n: 2, temperature: " + "9" * 300 + "\n")
    _status(page, "cannot open bad.yaml")
    assert page.locator("#canvas-box").bounding_box()["y"] == top


def test_node_summaries_stay_clear_of_the_output_port(page):
    _example(page)
    over = page.evaluate(
        """(W) => [...document.querySelectorAll('.fnode text')]
          .filter((t) => t.getBBox().x + t.getBBox().width > W - 8).map((t) => t.textContent)""",
        W,
    )
    assert over == []


def test_opening_a_file_lets_go_of_the_example(page):
    _example(page)
    _open(page, "tiny.yaml", TINY)
    _status(page, "valid · 3 steps")
    assert page.input_value("#examples") == ""
    _example(page)  # picking the example again reloads it
    page.wait_for_selector(".fnode[data-id='hot']")


def test_a_run_brings_its_tree_and_a_nodes_candidates_into_view(page):
    page.evaluate("scrollTo(0, 0)")
    _open(page, "tiny.yaml", TINY)
    _status(page, "valid · 3 steps")
    _run(page)
    tree = page.locator("#result .tree").bounding_box()
    assert page.evaluate("scrollY") > 0 and 0 <= tree["y"] and tree["y"] + tree["height"] <= 900  # scrolled to it
    page.evaluate("scrollTo(0, 0)")
    _select(page, "gen")
    page.wait_for_selector("#candidates .cand")
    side = page.locator("#side").bounding_box()
    first = page.locator("#candidates .cand").first.bounding_box()
    assert side["y"] <= first["y"] and first["y"] + first["height"] <= side["y"] + side["height"]
    # 4. the flow's tree: no edge crosses a label either
    assert page.evaluate(CROSSINGS, "#result .tree") == []
