"""Take docs/playground.png: the playground after a search on the embedded model, in headless Chromium.

    python docs/playground_screenshot.py [--model smollm2-135m] [--out docs/playground.png]
    python docs/playground_screenshot.py --islands --out docs/playground_islands.png   # CALC + a regex

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
    ap.add_argument("--out", default="docs/playground.png")
    ap.add_argument("--prompt", default="Write one sentence about a lighthouse in a storm.")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--islands", action="store_true", help="A search over paths with CALC and a regex.")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with serving(create_app(args.model, Limits())) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1360, "height": 1000}, device_scale_factor=1)
        page.goto(url + "/")
        page.wait_for_selector("#preset option[value='pink-temperature']", state="attached")
        if args.islands:
            page.fill("#prompt", "What is 17 * 23?")
            page.check("#tool-CALC")
            page.fill("#regex", r"CALC\([0-9* ]{1,12}\)[A-Za-z0-9 ,.]{1,40}")
            page.select_option("#strategy", "noise_search")
            page.fill("#budget", "240")
            page.fill("#scorer", "contains:391")
        else:
            page.fill("#prompt", args.prompt)
            page.select_option("#strategy", "anneal")
            page.fill("#budget", "480")
            page.fill("#scorer", "logprob")
        page.fill("#max_tokens", "40")
        page.fill("#seed", "7")
        page.click("#run")
        page.wait_for_selector(".tree .node.winner", timeout=600_000)
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    print(args.out)


if __name__ == "__main__":
    main()
