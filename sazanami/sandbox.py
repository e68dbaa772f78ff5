"""Run untrusted Python (generated code) in a sandboxed child process, never in ours.

Each program runs in a fresh interpreter (``-I -S``: no site-packages, no user paths) with:

1. an empty temporary working directory, deleted afterwards, and a scrubbed environment;
2. rlimits: CPU seconds, address space, file size, open files, no core dumps;
3. when we are root: its own network and mount namespaces (no network; a private ``/tmp``
   and ``/dev/shm``), then an unprivileged uid of its own with ``RLIMIT_NPROC`` = 1 so it cannot
   fork (the limit counts per uid, and root ignores it, hence the drop);
4. a wall-clock deadline at which its whole process group is killed.

The host sees only the exit status and the tails of stdout/stderr. What was active is reported
in :attr:`SandboxResult.isolation` (as non-root only the rlimits, the directory and the deadline).
"""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sazanami.errors import ParameterError

_CLONE_NEWNS = 0x00020000
_CLONE_NEWNET = 0x40000000
_MS_REC, _MS_PRIVATE = 0x4000, 0x40000
_UID_BASE = 610_000
"""Sandboxed programs run as uids from here on: ids no account uses, one per concurrent run."""
_UID_SPAN = 10_000
_uid_lock = threading.Lock()
_uid_next = [os.getpid() % _UID_SPAN]
_TAIL = 2000


@dataclass(frozen=True)
class SandboxLimits:
    """What one sandboxed program may use."""

    wall_s: float = 10.0
    """Wall-clock deadline; its process group is killed then; in (0, 600]."""
    cpu_s: int = 10
    """CPU seconds (RLIMIT_CPU); in [1, 600]."""
    memory_mb: int = 1024
    """Address space in MiB (RLIMIT_AS); in [64, 16384]."""
    file_mb: int = 16
    """Largest file it may write, in MiB (RLIMIT_FSIZE); in [0, 1024]."""

    def __post_init__(self) -> None:
        for name, lo, hi in (("wall_s", 0.0, 600.0), ("cpu_s", 1, 600), ("memory_mb", 64, 16384), ("file_mb", 0, 1024)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
                raise ParameterError(name, f"{name} must be in [{lo}, {hi}], got {value!r}")
        if self.wall_s <= 0:
            raise ParameterError("wall_s", f"wall_s must be in (0, 600], got {self.wall_s!r}")


@dataclass(frozen=True)
class SandboxResult:
    """How a sandboxed program ended."""

    returncode: int
    """Exit status; negative: killed by that signal."""
    timed_out: bool
    """The wall-clock deadline killed it."""
    stdout: str
    """The last 2,000 characters it printed."""
    stderr: str
    wall_s: float
    isolation: tuple[str, ...]
    """What was in force besides the rlimits: ``uid``, ``netns``, ``mountns``."""

    @property
    def ok(self) -> bool:
        """It exited with status 0 before its deadline."""
        return self.returncode == 0 and not self.timed_out


def _traversable(path: str) -> bool:
    """Whether a user with no rights of ours can execute ``path`` (every parent o+x)."""
    p = Path(path)
    try:
        if not os.stat(p).st_mode & 0o001:
            return False
        return all(os.stat(parent).st_mode & 0o001 for parent in p.parents)
    except OSError:
        return False


def interpreter() -> str:
    """A Python interpreter the sandbox's unprivileged uid can run (ours, else the system's)."""
    ours = os.path.realpath(sys.executable)
    if os.geteuid() != 0 or _traversable(ours):
        return ours
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"):
        if os.path.exists(candidate) and _traversable(os.path.realpath(candidate)):
            return candidate
    raise RuntimeError(
        f"no Python interpreter an unprivileged user can run ({ours} lies in a private directory); "
        "install the system python3 (apt-get install python3)"
    )


def _next_uid() -> int:
    with _uid_lock:
        _uid_next[0] = (_uid_next[0] + 1) % _UID_SPAN
        return _UID_BASE + _uid_next[0]


_namespaces = [True]
"""Whether unshare/mount work here (root without CAP_SYS_ADMIN, e.g. in some containers, cannot)."""


def _isolate(limits: SandboxLimits, uid: int | None, namespaces: bool) -> None:
    """Runs in the child between fork and exec: namespaces, rlimits, then the uid drop.

    A failure raises, which makes ``Popen`` raise in the parent (so we know what was in force).
    """
    if namespaces:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(_CLONE_NEWNS | _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare")
        if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
            raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
        size = b"size=" + str(limits.file_mb + 1).encode() + b"m,mode=1777"
        for tmp in (b"/tmp", b"/dev/shm"):
            if os.path.isdir(tmp) and libc.mount(b"tmpfs", tmp, b"tmpfs", 0, size) != 0:
                raise OSError(ctypes.get_errno(), f"mount tmpfs {tmp!r}")
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mb, limits.memory_mb * mb))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb * mb, limits.file_mb * mb))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
        os.setuid(uid)


def run_python(source: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``source`` as a Python program in the sandbox and report how it ended."""
    limits = limits or SandboxLimits()
    root = os.geteuid() == 0
    uid = _next_uid() if root else None
    work = tempfile.mkdtemp(prefix="sazanami-sandbox-")
    try:
        if uid is not None:
            os.chown(work, uid, uid)
            os.chmod(work, 0o700)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": work, "TMPDIR": work, "PYTHONHASHSEED": "0"}
        start = time.perf_counter()
        namespaces = uid is not None and _namespaces[0]
        try:
            proc = _spawn(work, env, limits, uid, namespaces)
        except subprocess.SubprocessError:
            if not namespaces:
                raise
            _namespaces[0] = namespaces = False  # not permitted here: rlimits and the uid only
            proc = _spawn(work, env, limits, uid, namespaces)
        timed_out = False
        try:
            out, err = proc.communicate(source.encode(), timeout=limits.wall_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            out, err = proc.communicate()
        _kill_group(proc.pid)  # anything it left behind in its group
        isolation = (("uid",) if uid is not None else ()) + (("netns", "mountns") if namespaces else ())
        return SandboxResult(
            returncode=proc.returncode,
            timed_out=timed_out,
            stdout=out.decode(errors="replace")[-_TAIL:],
            stderr=err.decode(errors="replace")[-_TAIL:],
            wall_s=time.perf_counter() - start,
            isolation=isolation,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _spawn(
    work: str, env: dict[str, str], limits: SandboxLimits, uid: int | None, namespaces: bool
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [interpreter(), "-I", "-S", "-B", "-"],  # the source on stdin: /tmp is remounted
        cwd=work,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=lambda: _isolate(limits, uid, namespaces),
        close_fds=True,
    )


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
