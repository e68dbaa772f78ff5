"""The playground in headless Chromium: load the page, stream variants, run a search, see the tree.

Needs Debian's ``chromium`` (``apt-get install -y chromium chromium-driver``) and Playwright for
Python (``pip install playwright``); it drives the system browser, so no ``playwright install``.
"""

from __future__ import annotations

import re

import pytest


@pytest.fixture(scope="module")
def page(app_url, browser):
    pg = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(app_url + "/")
    pg.wait_for_selector("#preset option[value='pink-temperature']", state="attached")
    yield pg
    pg.close()
    assert not errors, errors


def test_streams_variants_side_by_side_with_traces(page):
    page.fill("#n", "3")
    page.fill("#max_tokens", "12")
    page.fill("#seed", "7")
    page.select_option("#strategy", "")
    page.click("#run")
    page.wait_for_function("document.querySelectorAll('.variant.done').length === 3", timeout=20_000)
    assert page.locator(".variant svg.plot").count() == 3  # temperature/noise trace per variant
    assert page.locator(".variant svg.plot polyline.series-noise").count() == 3  # pink-temperature's noise
    assert "seed" in page.inner_text("#variant-0 .label")
    assert page.is_hidden("#search")


def test_search_shows_tree_with_winner_and_node_details(page):
    page.select_option("#strategy", "best_of_n")
    page.fill("#budget", "48")
    page.fill("#scorer", "logprob")
    page.fill("#max_tokens", "8")
    page.click("#run")
    page.wait_for_selector(".tree .node.winner", timeout=30_000)
    nodes = page.locator(".tree .node")
    assert nodes.count() >= 3
    assert page.is_visible("#detail") and "winner" in page.inner_text("#detail")
    assert page.locator("#variant-0.winner").count() == 1
    other = page.locator(".tree .node:not(.winner):not(.root)").first
    other.click()
    detail = page.inner_text("#detail")
    assert "node #" in detail and "winner" not in detail
    assert page.locator("#detail svg.plot").count() == 1


def test_server_errors_are_shown(page):
    page.select_option("#strategy", "best_of_n")
    page.fill("#budget", "100000")
    page.click("#run")
    page.wait_for_selector("#status.error", timeout=10_000)
    assert "400" in page.inner_text("#status") and "search.budget" in page.inner_text("#status")


def test_tool_results_are_marked_in_variants_and_search_nodes(page):
    """Islands from the playground: a tool and a regex; injected results show as marks."""
    page.check("#tool-CALC")
    page.fill("#regex", r"CALC\(6\*7\) is [a-z]{3}")
    page.select_option("#strategy", "")  # first: n is disabled while a search strategy is chosen
    page.fill("#n", "2")
    page.fill("#max_tokens", "24")
    page.click("#run")
    page.wait_for_function("document.querySelectorAll('.variant.done').length === 2", timeout=20_000)
    marks = page.locator(".variant .text mark.island")
    assert marks.count() == 2 and marks.first.inner_text().strip() == "=> 42"
    assert marks.first.get_attribute("title").startswith("CALC(6*7)")
    assert page.inner_text("#variant-0 .text").startswith("CALC(6*7) => 42")
    page.select_option("#strategy", "noise_search")
    page.fill("#budget", "120")
    page.click("#run")
    page.wait_for_selector(".tree .node.winner", timeout=30_000)
    assert page.locator("#variant-0.winner .text mark.island").count() == 1
    assert page.locator("#detail pre mark.island").count() == 1
    page.uncheck("#tool-CALC")
    page.fill("#regex", "")


def test_usage_shows_speculative_drafts(page):
    """Issue 27: with a speculative source, the run's usage line says how many tokens were
    drafted and how many of them the sampler drew (from the stream's usage chunk)."""
    page.select_option("#strategy", "")
    page.check("input[name=mode][value=completion]")
    page.fill("#prompt", "the cat sat on the mat. the cat sat on the mat. the cat sat on the mat. the")
    page.fill("#n", "1")
    page.fill("#max_tokens", "32")
    page.fill("#temperature", "0")
    page.fill("#speculative", "prompt")
    page.click("#run")
    page.wait_for_function("document.querySelector('#usage').textContent.includes('speculative')", timeout=20_000)
    usage = page.inner_text("#usage")
    assert re.search(r"\d+ prompt \+ \d+ generated tokens", usage), usage
    assert re.search(r"speculative: \d+ of \d+ drafted tokens accepted", usage), usage
    page.fill("#speculative", "")
    page.click("#run")
    page.wait_for_function("document.querySelector('#usage').textContent.includes('generated')", timeout=20_000)
    assert "speculative" not in page.inner_text("#usage")  # usage without drafts says nothing of them
