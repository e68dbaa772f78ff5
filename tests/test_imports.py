"""The package's import graph has no cycles: every module imports alone in a fresh
interpreter, and the graph of its import statements (inside functions too) has no cycle."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import sazanami

ROOT = Path(sazanami.__file__).parent


def _graph() -> dict[str, set[str]]:
    mods = {}
    for f in ROOT.rglob("*.py"):
        name = ".".join(f.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        mods[name] = f
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sazanami"):
                graph[m] |= {t for t in [node.module, *(f"{node.module}.{a.name}" for a in node.names)] if t in mods}
            elif isinstance(node, ast.Import):
                graph[m] |= {a.name for a in node.names if a.name in mods}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle (a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return path[path.index(w) :] + [w]
            if w not in state and (found := visit(w)):
                return found
        state[v] = 2
        path.pop()
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    graph = _graph()
    assert "sazanami.engine.beams" in graph["sazanami.engine.loop"]  # the graph sees imports
    assert _cycle(graph) is None, " → ".join(_cycle(graph) or [])


# Run in a fresh interpreter: compile sazanami's sources once (bytecode under a temporary
# prefix), import the third-party packages the modules import at their top level (so that each
# module's own run is short), then fork once per module; a fork holds no sazanami module, so
# importing the module there runs exactly what `python -c "import m"` runs of sazanami. One
# fork per core at a time. A missing optional package skips its modules.
_IMPORT_EACH = r"""
import compileall, gc, importlib, json, os, sys, traceback
modules, third_party, root = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
compileall.compile_dir(root, quiet=1)
for name in third_party:
    try:
        importlib.import_module(name)
    except Exception:
        pass
assert not any(m == "sazanami" or m.startswith("sazanami.") for m in sys.modules), "a package imported sazanami"
gc.freeze()  # forks' collections skip (and do not copy) the preloaded objects
report, running = {}, {}

def reap():
    pid, status = os.wait()
    name, fd = running.pop(pid)
    with os.fdopen(fd, "rb") as f:
        text = f.read().decode()
    report[name] = text if os.waitstatus_to_exitcode(status) else ""

for name in modules:
    while len(running) >= max(2, os.cpu_count() or 1):
        reap()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code, text = 0, ""
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] == "sazanami":
                code, text = 1, traceback.format_exc()
        except BaseException:
            code, text = 1, traceback.format_exc()
        os.write(w, text.encode()[-30000:])
        os._exit(code)
    os.close(w)
    running[pid] = (name, r)
while running:
    reap()
print(json.dumps(report))
"""


def _third_party() -> list[str]:
    """Modules outside sazanami (and the standard library) that modules import outside functions."""
    names: set[str] = set()
    for f in ROOT.rglob("*.py"):
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    top = {n.split(".")[0] for n in names}
    return sorted(n for n in names if n.split(".")[0] in top - {"sazanami", "__future__"} - sys.stdlib_module_names)


def test_every_module_imports_alone_in_a_fresh_interpreter(tmp_path):
    """A cycle through a package's ``__init__`` (importing ``a.b`` runs ``a/__init__`` first)
    is no edge in the graph below: ``sazanami.research.noise_lm.commands`` → ``sazanami.cli.options``
    → ``sazanami.cli`` (its ``__init__``) → ``…noise_lm.commands``, half-initialised, failed."""
    modules = sorted(m for m in _graph() if not m.endswith(".__main__"))  # those run a program
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path)  # compiled once, not per fork; not in the tree
    run = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, json.dumps(modules), json.dumps(_third_party()), str(ROOT)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.splitlines()[-1])
    assert sorted(report) == modules
    failed = {m: text for m, text in report.items() if text}
    assert not failed, "\n".join(f"{m}:\n{text}" for m, text in failed.items())


def test_the_cli_adds_registered_commands():
    """The CLI imports no research module; research's command registers itself (entry point)."""
    import click

    from sazanami.cli import main

    graph = _graph()
    assert not any(t.startswith("sazanami.research") for t in graph["sazanami.cli"])
    with click.Context(main) as ctx:
        assert "noise-lm" in main.list_commands(ctx)
        assert main.get_command(ctx, "noise-lm").name == "noise-lm"
