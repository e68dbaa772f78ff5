"""The flow editor in headless Chromium: load an example, add and wire a node, run, save, rerun from the CLI.

Needs Debian's ``chromium`` and Playwright for Python, like tests/test_server_browser.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from sazanami.cli.search import flow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "flows"


@pytest.fixture(scope="module")
def page(app_url, browser):
    pg = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(app_url + "/flows")
    pg.wait_for_selector("#kinds button[data-kind='merge']")
    pg.wait_for_selector(".fnode[data-id='hot']")  # the branching example opens first
    yield pg
    pg.close()
    assert not errors, errors


def _center(page, selector: str) -> tuple[float, float]:
    """The element's center on the page (the canvas is redrawn after each validation: retry)."""
    for _ in range(50):
        box = page.locator(selector).bounding_box()
        if box is not None:
            return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.wait_for_timeout(50)
    raise AssertionError(f"{selector} is not on the page")


def _wire(page, source: str, target: str) -> None:
    """Drag from the source node's output port to the target node."""
    page.mouse.move(*_center(page, f".fnode[data-id='{source}'] .port.out"))
    page.mouse.down()
    x, y = _center(page, f".fnode[data-id='{target}'] rect.body")
    page.mouse.move(x - 20, y, steps=4)
    page.mouse.move(x, y, steps=2)
    page.mouse.up()


def _valid(page, steps: int | None = None) -> None:
    """Wait for the status to say the flow is valid (with ``steps`` steps)."""
    text = "valid" + (f" · {steps} steps" if steps is not None else "")
    page.wait_for_function(f"document.getElementById('status').textContent.startsWith('{text}')", timeout=30_000)


def test_build_run_save_and_rerun_from_the_cli(page, tmp_path):
    page.select_option("#examples", "concepts.yaml")
    page.wait_for_function("document.querySelectorAll('.fnode').length === 9")
    assert page.locator("#wires .wire:not(.hit)").count() == 8  # the linear form: a chain
    _valid(page, 9)
    # add a generator and wire it into the improve step, next to the selected drafts
    page.click("#kinds button[data-kind='generate']")
    page.wait_for_selector(".fnode[data-id='generate_9'].selected")
    page.fill("#form input[name='n']", "2")
    page.press("#form input[name='n']", "Tab")
    page.fill("#form input[name='temperature']", "1.3")
    page.press("#form input[name='temperature']", "Tab")
    page.locator(".fnode[data-id='generate_9']").wait_for()
    # move the new node out of the way (it is dropped in the middle), then wire it
    x, y = _center(page, ".fnode[data-id='generate_9'] rect.body")
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 150, y + 170, steps=5)
    page.mouse.up()
    _wire(page, "generate_9", "improve_3")
    page.wait_for_selector("path.wire[data-from='generate_9'][data-to='improve_3']", state="attached")
    _valid(page, 10)
    # run: watch the nodes light up
    page.evaluate(
        """() => { window.seen = new Set();
        new MutationObserver((ms) => ms.forEach((m) => m.addedNodes.forEach((n) => {
          if (n.classList && n.classList.contains('fnode')) n.classList.forEach((c) => window.seen.add(n.dataset.id + ':' + c));
        }))).observe(document.getElementById('nodes'), {childList: true}); }"""
    )
    page.click("#run")
    page.wait_for_selector("#result .tree .node.winner", timeout=60_000)
    seen = set(page.evaluate("[...window.seen]"))
    assert {"generate_0:running", "generate_0:done", "generate_9:running", "improve_3:done"} <= seen
    assert page.locator(".fnode.done").count() == 10
    state = page.text_content(".fnode[data-id='generate_0'] text.state")
    assert re.match(r"8 cand · \d+ tok · best", state), state
    assert page.text_content(".fnode[data-id='improve_3'] text.state").startswith("15 cand")  # (3 + 2) kept + 10
    page.click(".fnode[data-id='generate_9'] rect.body")
    assert page.locator("#candidates .cand").count() == 2
    spend = page.inner_text("#spend")
    best = int(re.search(r"best #(\d+)", spend).group(1))
    winner = page.inner_text("#detail pre")
    assert "winner" in page.inner_text("#detail")
    # save, and run the saved file from the CLI: the same winner
    with page.expect_download() as info:
        page.click("#save-yaml")
    path = tmp_path / "edited.yaml"
    info.value.save_as(path)
    text = path.read_text()
    assert "in:" in text and "generate_9" in text and "layout:" in text
    group = click.Group(commands={"flow": flow})
    r = CliRunner().invoke(group, ["flow", "run", str(path), "-m", "tiny-random", "--json", "--no-progress"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["best"] == best and doc["nodes"][best]["text"] == winner


def test_invalid_graph_is_shown_on_its_node_and_undo_fixes_it(page):
    page.select_option("#examples", "hot_and_cold.yaml")
    page.wait_for_selector(".fnode[data-id='polish']")
    _valid(page, 9)
    _wire(page, "pick3", "rate")  # rate → pick3 → rate: a cycle
    page.wait_for_selector(".fnode.error", timeout=10_000)
    assert "cycle" in page.inner_text("#status")
    assert page.locator(".fnode.error").get_attribute("data-id") in ("rate", "pick3")
    page.keyboard.press("Control+z")
    page.wait_for_selector(".fnode.error", state="detached", timeout=30_000)
    _valid(page, 9)
    # delete a node (and its wires), undo brings both back
    wires = page.locator("#wires .wire:not(.hit)").count()
    page.click(".fnode[data-id='both'] rect.body")
    page.keyboard.press("Delete")
    page.wait_for_function("!document.querySelector(\".fnode[data-id='both']\")")
    assert page.locator("#wires .wire:not(.hit)").count() == wires - 3
    page.wait_for_selector(".fnode.error[data-id='rate']")  # rate now reads a pool nobody writes
    page.click("#undo")
    page.wait_for_selector(".fnode[data-id='both']")
    assert page.locator("#wires .wire:not(.hit)").count() == wires


def test_open_or_drop_a_file_pan_and_zoom(page):
    page.set_input_files("#file", str(EXAMPLES / "grounded_arithmetic.yaml"))
    page.wait_for_function("document.querySelectorAll('.fnode').length === 6")
    before = page.get_attribute("#view", "transform")
    page.mouse.move(*_center(page, "#canvas"))
    page.mouse.wheel(0, -400)
    zoomed = page.get_attribute("#view", "transform")
    assert zoomed != before and float(re.search(r"scale\(([\d.]+)\)", zoomed).group(1)) > float(
        re.search(r"scale\(([\d.]+)\)", before).group(1)
    )
    # drop a file on the page
    text = (EXAMPLES / "creative_judge.json").read_text()
    page.evaluate(
        """(text) => { const dt = new DataTransfer();
        dt.items.add(new File([text], "creative_judge.json", {type: "application/json"}));
        window.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true})); }""",
        text,
    )
    page.wait_for_selector(".fnode[data-id='strategy_0']")
    assert page.locator(".fnode").count() == 6
    box = page.locator("#canvas").bounding_box()
    page.mouse.move(box["x"] + 8, box["y"] + 8)
    page.mouse.down()
    page.mouse.move(box["x"] + 108, box["y"] + 58, steps=3)
    page.mouse.up()
    assert page.get_attribute("#view", "transform") != zoomed


def test_fifty_nodes_stay_fast(page):
    steps = [{"generate": {"n": 2}}] + [{"score": {}} if i % 2 else {"select": {"k": 1}} for i in range(49)]
    doc = {
        "name": "long",
        "prompt": "x",
        "budget": 64,
        "params": {"max_tokens": 4},
        "scorer": "contains:a",
        "steps": steps,
    }
    page.evaluate("(doc) => loadDoc(doc, 'long')", doc)
    page.wait_for_function("document.querySelectorAll('.fnode').length === 50")
    _valid(page)
    ms = page.evaluate(
        "() => { const t = performance.now(); for (let i = 0; i < 20; i++) render(); return (performance.now() - t) / 20; }"
    )
    assert ms < 40, f"one redraw of 50 nodes took {ms:.1f} ms"
    assert page.locator("#wires .wire:not(.hit)").count() == 49
