"""The sandbox contains what generated code may do: loops, forks, memory, shell, files, network."""

from __future__ import annotations

import os
import time

import pytest

from sazanami.errors import ParameterError
from sazanami.sandbox import SandboxLimits, run_python

QUICK = SandboxLimits(wall_s=5.0, cpu_s=2, memory_mb=512)


def test_a_plain_program_runs_and_reports():
    r = run_python("print(6 * 7)", QUICK)
    assert r.ok and r.stdout.strip() == "42"
    assert not run_python("raise SystemExit(3)", QUICK).ok


def test_an_infinite_loop_is_killed_at_its_limits():
    start = time.perf_counter()
    r = run_python("while True:\n    pass\n", SandboxLimits(wall_s=3.0, cpu_s=1))
    assert not r.ok and time.perf_counter() - start < 3.5


def test_a_sleeping_program_is_killed_at_the_wall_clock_deadline():
    r = run_python("import time\ntime.sleep(30)\n", SandboxLimits(wall_s=1.0, cpu_s=2))
    assert r.timed_out and not r.ok and r.wall_s < 3


def test_a_huge_allocation_fails_inside_the_child():
    r = run_python("x = bytearray(20 * 1024**3)\nprint('allocated')", QUICK)
    assert not r.ok and "allocated" not in r.stdout and "MemoryError" in r.stderr


def test_a_bounded_fork_bomb_cannot_fork():
    # Bounded on purpose: 50 forks at most, so a failing sandbox cannot take the machine down.
    source = (
        "import os\nmade = 0\n"
        "for _ in range(50):\n"
        "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
        "    if pid == 0:\n        os._exit(0)\n"
        "    made += 1\n"
        "print('forked', made)\n"
    )
    r = run_python(source, QUICK)
    if os.geteuid() != 0:
        pytest.skip("as non-root the sandbox cannot drop to a uid of its own (RLIMIT_NPROC counts per uid)")
    assert r.stdout.strip() == "forked 0"


def test_shell_commands_cannot_run():
    r = run_python("import os\nprint('status', os.system('echo pwned'))", QUICK)
    assert "pwned" not in r.stdout


def test_writes_outside_its_directory_fail(tmp_path):
    target = tmp_path / "escaped.txt"
    r = run_python(f"open({str(target)!r}, 'w').write('x')\nopen('inside.txt', 'w').write('ok')\n", QUICK)
    assert not target.exists()
    if os.geteuid() == 0:  # a private /tmp hides the path, elsewhere the unprivileged uid may not write
        assert not r.ok and ("Permission" in r.stderr or "No such file" in r.stderr)


def test_no_network_and_a_private_tmp():
    r = run_python(
        "import socket, os\n"
        "try:\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\n    print('connected')\n"
        "except OSError as e:\n    print('no network', e.errno)\n"
        "print('tmp', os.listdir('/tmp'))\n",
        QUICK,
    )
    assert "connected" not in r.stdout
    if "netns" in r.isolation:
        assert "tmp []" in r.stdout


def test_the_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("SAZANAMI_SECRET", "hunter2")
    r = run_python("import os\nprint(sorted(os.environ))", QUICK)
    assert "SAZANAMI_SECRET" not in r.stdout


@pytest.mark.parametrize("field,value", [("wall_s", 0), ("cpu_s", 0), ("memory_mb", 10), ("file_mb", -1)])
def test_limits_are_validated(field, value):
    with pytest.raises(ParameterError, match=field):
        SandboxLimits(**{field: value})
