"""Take docs/flows_editor.png: the flow editor running the branching example, in headless Chromium.

    python docs/flows_screenshot.py [--model smollm2-135m] [--flow hot_and_cold.yaml] [--out docs/flows_editor.png]

The picture is taken mid-run: some steps done (candidates, tokens, best score on the node),
one running; ``--done`` waits for the end instead (the tree opens below the canvas).
Needs Debian's chromium and ``pip install playwright`` (the system browser is used).
"""

from __future__ import annotations

import argparse

from playwright.sync_api import sync_playwright

from sazanami.server import Limits, create_app
from sazanami.server.testing import serving

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--flow", default="hot_and_cold.yaml", help="A file of examples/flows/.")
    ap.add_argument("--out", default="docs/flows_editor.png")
    ap.add_argument("--done", action="store_true", help="Wait for the run to end (the tree shows).")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with serving(create_app(args.model, Limits())) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000 if args.done else 720}, device_scale_factor=1)
        page.goto(url + "/flows")
        page.wait_for_selector(f"#examples option[value='{args.flow}']", state="attached")
        page.select_option("#examples", args.flow)
        page.wait_for_function("document.getElementById('status').textContent.startsWith('valid')", timeout=120_000)
        page.click(".fnode[data-id='hot'] rect.body")  # its form and, once run, its candidates
        page.click("#run")
        if args.done:
            page.wait_for_selector("#result .tree .node.winner", timeout=900_000)
        else:  # both generators and their merge done, a later step running
            page.wait_for_function(
                "document.querySelectorAll('.fnode.done').length >= 5 && document.querySelector('.fnode.running')",
                timeout=900_000,
                polling=50,
            )
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    print(args.out)


if __name__ == "__main__":
    main()
