"""The README is the front door and the rest lives in the documentation site (issue 26).

The README stays short, its links resolve, its test command is the one CI runs, every page under
docs/ is in the site's nav, and the site builds with warnings as errors.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _nav_pages() -> list[str]:
    """The .md paths named in mkdocs.yml's nav (the file is read as text: its tags need no loader)."""
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text[text.index("\nnav:") :]
    return re.findall(r":\s*(\S+\.md)\s*$", nav, flags=re.M)


def _sections(text: str) -> list[str]:
    return re.findall(r"^## (.+)$", text, flags=re.M)


def test_readme_is_short_and_has_one_example_per_surface() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    sections = _sections(text)
    for surface in ("Install and test", "Python", "Command line", "Server", "Search", "Islands", "Training"):
        assert surface in sections, surface
    for surface in ("Python", "Command line", "Server", "Search", "Islands", "Training"):
        body = text.split(f"## {surface}\n", 1)[1].split("\n## ", 1)[0]
        assert "```" in body, f"README section {surface!r} has no example"


def test_readme_test_command_is_the_one_ci_runs() -> None:
    text = README.read_text(encoding="utf-8")
    install = text.split("## Install and test\n", 1)[1].split("\n## ", 1)[0]
    assert "make test" in install and "make run" in install
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    commands = [line.strip() for line in ci if line.strip() and not line.lstrip().startswith("#")]
    assert "make test" in commands and "make docs" in commands
    assert commands.index("make docs") > commands.index("make test")  # docs after the suite
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^docs:.*\n\t.*mkdocs build --strict", makefile, flags=re.M)


def test_readme_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    links = [link for link in _LINK.findall(text) if not link.startswith(("http://", "https://", "#"))]
    assert links, "the README links to the guide"
    for link in links:
        path = link.split("#", 1)[0]
        assert (ROOT / path).exists(), f"README links to missing {path}"
        anchor = link.split("#", 1)[1] if "#" in link else None
        if anchor and path.endswith(".md"):
            headings = re.findall(r"^#+ (.+)$", (ROOT / path).read_text(encoding="utf-8"), flags=re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
            assert anchor in slugs, f"README links to missing anchor {link}"


def test_readme_links_every_guide_page_and_result() -> None:
    text = README.read_text(encoding="utf-8")
    linked = {link.split("#", 1)[0] for link in _LINK.findall(text)}
    for page in sorted((DOCS / "guide").glob("*.md")) + sorted(DOCS.glob("*.md")):
        rel = page.relative_to(ROOT).as_posix()
        if rel == "docs/index.md":
            continue  # the site's home: its text is the README's introduction
        assert rel in linked, f"README does not link {rel}"


def test_every_page_is_in_the_nav_and_every_nav_page_exists() -> None:
    nav = _nav_pages()
    assert len(nav) == len(set(nav)), "a page is listed twice"
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages - set(nav) == set(), "pages under docs/ missing from mkdocs.yml's nav"
    assert set(nav) - pages == set(), "mkdocs.yml's nav names pages that do not exist"


def test_reference_pages_name_importable_modules() -> None:
    """Each `::: module` of the API reference is a module of the package (a rename must update it)."""
    names = []
    for page in (DOCS / "reference").glob("*.md"):
        names += re.findall(r"^::: (\S+)$", page.read_text(encoding="utf-8"), flags=re.M)
    assert "sazanami.sampling.params" in names and "sazanami.engine.loop" in names
    for name in names:
        assert importlib.util.find_spec(name) is not None, name


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="the docs extra is not installed")
def test_site_builds_strict(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    home = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "first-class, seedable control signal" in home  # the README's introduction, included
    reference = (tmp_path / "site" / "reference" / "params" / "index.html").read_text(encoding="utf-8")
    assert "top_p" in reference and "SamplingParams" in reference  # generated from the docstrings
