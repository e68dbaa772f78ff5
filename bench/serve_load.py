"""Load on ``sazanami serve`` beside llama.cpp's own ``llama-server``: concurrent streaming clients on loopback.

    python bench/serve_load.py [--model smollm2-135m,qwen2.5-coder-0.5b] [--clients 1,8,32]
                               [--servers sazanami,llama-server] [--duration 30] [--max-tokens 64]
                               [--temperature 0.8] [--threads 2] [--backend llamacpp] [--cohorts 2]
                               [--llama-server PATH] [--check] [--json FILE]

The comparison of issue 28, for a quiet machine (about 15 minutes; the first run also builds
``llama-server``, about 9 minutes on 2 cores, see ``bench/llama_server.py``)::

    python bench/serve_load.py --model smollm2-135m,qwen2.5-coder-0.5b --clients 1,8,32 \\
        --duration 30 --json bench/results/serve_load-$(date -u +%F).json

For each model and each number of clients, each server is started fresh in a subprocess on a
free loopback port, warmed with one short request, then loaded for ``--duration`` seconds
(clients stop sending then; requests in flight finish). The servers take turns at each number
of clients, so a drift in the machine's load touches both alike. They run the same GGUF
(:func:`sazanami.models.gguf_path`) with ``--threads`` threads:

- ``sazanami``: ``sazanami serve --backend BACKEND --model NAME --threads T --cohorts C``, one
  arm per ``--cohorts`` setting (``1`` = late requests join the next batch, ``2`` = the next step);
- ``llama-server``: ``llama-server -m GGUF -t T -np N -c N*512 --jinja --alias NAME`` (N slots
  for N clients, continuous batching as by default), built by ``bench/llama_server.py`` unless
  ``--llama-server`` names a binary.

Each client is the official ``openai`` AsyncOpenAI client streaming chat completions
(``stream_options.include_usage``; ``--max-tokens``, ``--temperature``, a seed per request,
prompts from a fixed list; client k draws the same prompts and seeds from every server) in a
loop. Reported per phase: requests/s, aggregate tokens/s (generated tokens of finished
requests, from the usage chunk, over the phase's wall time, tail included), time to first
token p50/p95, inter-token latency p50/p95 (gaps between consecutive chunks that carry text,
as vLLM's benchmark measures it; ``tok/chunk`` says how many tokens a chunk carried on
average, 1.0 when each token is streamed alone), errors, the server's peak resident memory,
and tokens/s over the same arm's first (fewest clients) phase. Then, per model and number of
clients, each sazanami arm over llama-server: tokens/s (above 1 = sazanami faster) and TTFT
p50 (below 1 = sazanami faster). ``--check`` exits 1 unless every sazanami arm's last phase
has 0 errors and ≥ 4× its first phase's tokens/s (the target for 32 clients). Load goes only
to 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

PROMPTS = [
    "Write a short poem about the sea.",
    "Explain why the sky is blue in two sentences.",
    "Give three tips for learning a new language.",
    "Describe a busy market in the morning.",
    "What makes a good cup of tea?",
    "Tell a tiny story about a lost cat.",
    "List some uses of bamboo.",
    "Why do leaves change color in autumn?",
]
SERVERS = ("sazanami", "llama-server")
SLOT_CONTEXT = 512
"""llama-server's context per slot (``-c`` is this times the number of slots): prompt plus output."""


def _quantiles(values: list[float]) -> tuple[float | None, float | None]:
    """(p50, p95) of ``values``, rounded to milliseconds; (None, None) when there are none."""
    if not values:
        return None, None
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) >= 2 else values * 99
    return round(q[49], 3), round(q[94], 3)


@dataclass
class Phase:
    model: str
    server: str
    clients: int
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)
    tokens: int = 0
    chunks: int = 0
    requests: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    wall: float = 0.0
    peak_rss: int = 0

    @property
    def tps(self) -> float:
        return self.tokens / self.wall if self.wall else 0.0

    def row(self, first_tps: float | None) -> dict[str, object]:
        ttft, itl = _quantiles(self.ttft), _quantiles(self.itl)
        return {
            "model": self.model,
            "server": self.server,
            "clients": self.clients,
            "requests": self.requests,
            "req/s": round(self.requests / self.wall, 3) if self.wall else 0.0,
            "tok/s": round(self.tps, 2),
            "ttft_p50_s": ttft[0],
            "ttft_p95_s": ttft[1],
            "itl_p50_s": itl[0],
            "itl_p95_s": itl[1],
            "tok/chunk": round(self.tokens / self.chunks, 2) if self.chunks else None,
            "errors": self.errors,
            "peak_rss_mib": round(self.peak_rss / 2**20),
            "x_first": round(self.tps / first_tps, 2) if first_tps else None,
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sazanami_command(args: argparse.Namespace, model: str, port: int, clients: int, cohorts: int) -> list[str]:
    rows = str(max(64, clients))
    return [
        sys.executable, "-m", "sazanami.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--model", model, "--backend", args.backend, "--cohorts", str(cohorts), "--max-concurrent", rows,
        "--max-batch-rows", rows, "--max-tokens", str(max(args.max_tokens, 64)), "--threads", str(args.threads),
        "--log-level", "warning",
    ]  # fmt: skip


def llama_server_command(binary: Path, gguf: Path, model: str, port: int, clients: int, threads: int) -> list[str]:
    return [
        str(binary), "-m", str(gguf), "-t", str(threads), "-np", str(clients), "-c", str(clients * SLOT_CONTEXT),
        "--jinja", "--alias", model, "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip


def start_server(cmd: list[str], port: int, log: Path) -> subprocess.Popen:
    """Start ``cmd`` (its output to ``log``) and wait until ``/health`` answers 200 (llama-server: 503 while loading)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise SystemExit(f"{cmd[0]} exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.25)
    proc.kill()
    raise SystemExit(f"{cmd[0]} did not start in 300 s (log: {log})")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def served_id(port: int) -> str:
    """The model id the server lists at ``/v1/models`` (the requests name it)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as r:
        return json.loads(r.read())["data"][0]["id"]


def watch_memory(pid: int, phase: Phase, stop: threading.Event) -> None:
    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            phase.peak_rss = max(phase.peak_rss, proc.memory_info().rss)
        except psutil.Error:
            return
        stop.wait(0.1)


async def client_loop(
    base: str, model: str, phase: Phase, until: float, max_tokens: int, temperature: float, seed: int
) -> None:
    import openai

    rng = random.Random(seed)
    async with openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0, timeout=600) as client:
        while time.monotonic() < until:
            t0 = time.monotonic()
            times: list[float] = []  # arrival of each chunk that carries text
            try:
                stream = await client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": rng.choice(PROMPTS)}],
                    max_tokens=max_tokens,
                    temperature=temperature,
                    seed=rng.randrange(2**31),
                    stream=True,
                    stream_options={"include_usage": True},
                )
                used = None
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        times.append(time.monotonic())
                    if chunk.usage is not None:
                        used = chunk.usage.completion_tokens
                phase.requests += 1
                phase.tokens += len(times) if used is None else used  # a server without usage: count chunks
                phase.chunks += len(times)
                if times:
                    phase.ttft.append(times[0] - t0)
                    phase.itl.extend(b - a for a, b in zip(times, times[1:]))
            except Exception as exc:  # noqa: BLE001 - counted and reported
                phase.errors += 1
                kind = type(exc).__name__
                phase.error_kinds[kind] = phase.error_kinds.get(kind, 0) + 1
                await asyncio.sleep(0.1)


def run_phase(phase: Phase, base: str, model: str, args: argparse.Namespace, pid: int, duration: float) -> Phase:
    stop = threading.Event()
    watcher = threading.Thread(target=watch_memory, args=(pid, phase, stop), daemon=True)
    watcher.start()

    async def main() -> None:
        until = time.monotonic() + duration
        await asyncio.gather(
            *(
                client_loop(base, model, phase, until, args.max_tokens, args.temperature, seed=i)
                for i in range(phase.clients)
            )
        )

    t = time.monotonic()
    asyncio.run(main())
    phase.wall = time.monotonic() - t
    stop.set()
    watcher.join()
    return phase


def measure(args: argparse.Namespace, arm: str, cmd: list[str], model: str, clients: int, logs: Path) -> Phase:
    """One phase: start ``cmd`` fresh, warm it with one short request, load it with ``clients`` clients."""
    port = int(cmd[cmd.index("--port") + 1])
    proc = start_server(cmd, port, logs / f"{arm}-{model}-{clients}.log".replace("/", "_"))
    base = f"http://127.0.0.1:{port}/v1"
    try:
        name = served_id(port)
        if "/" in name or "\\" in name:
            print(f"warning: {arm} serves the model under a file path: {name!r}", file=sys.stderr)
        warm = argparse.Namespace(max_tokens=4, temperature=args.temperature)
        run_phase(Phase(model, arm, 1), base, name, warm, proc.pid, 0.1)
        return run_phase(Phase(model, arm, clients), base, name, args, proc.pid, args.duration)
    finally:
        stop_server(proc)


def ratios(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Per model and number of clients, each sazanami arm's tokens/s and TTFT p50 over llama-server's."""
    base = {(r["model"], r["clients"]): r for r in rows if r["server"] == "llama-server"}
    out = []
    for r in rows:
        ref = base.get((r["model"], r["clients"]))
        if r["server"] == "llama-server" or ref is None:
            continue
        tps = r["tok/s"] / ref["tok/s"] if ref["tok/s"] else None
        ttft = r["ttft_p50_s"] / ref["ttft_p50_s"] if r["ttft_p50_s"] and ref["ttft_p50_s"] else None
        out.append(
            {
                "model": r["model"],
                "clients": r["clients"],
                "arm": r["server"],
                "tok/s ratio": round(tps, 2) if tps is not None else None,
                "ttft_p50 ratio": round(ttft, 2) if ttft is not None else None,
            }
        )
    return out


def print_table(rows: list[dict[str, object]]) -> None:
    cols = list(dict.fromkeys(c for r in rows for c in r))
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r.get(c)) for c in cols))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m,qwen2.5-coder-0.5b", help="comma list of models with a GGUF")
    ap.add_argument("--clients", default="1,8,32", help="comma list of numbers of concurrent clients")
    ap.add_argument("--servers", default=",".join(SERVERS), help=f"comma list of {', '.join(SERVERS)}")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds each phase sends requests")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of each server (llama-server -t)")
    ap.add_argument("--backend", default="llamacpp", help="sazanami serve --backend")
    ap.add_argument("--cohorts", default="2", help="comma list of sazanami batcher cohort settings (one arm each)")
    ap.add_argument("--llama-server", default=None, help="llama-server binary (default: build it, see llama_server.py)")
    ap.add_argument("--check", action="store_true", help="exit 1 unless 0 errors and ≥ 4× the first phase")
    ap.add_argument("--json", dest="json_out", default=None, help="also write the results to this file")
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    servers = args.servers.split(",")
    if unknown := set(servers) - set(SERVERS):
        ap.error(f"--servers must be among {', '.join(SERVERS)}, got {', '.join(sorted(unknown))}")

    from sazanami import models

    ggufs = {m: models.gguf_path(m) for m in args.model.split(",")}
    binary = None
    if "llama-server" in servers:
        if args.llama_server:
            binary = Path(args.llama_server)
        else:
            from llama_server import build  # bench/ is on sys.path when this runs as a script

            binary = build()

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), None)
    cpu = cpu or platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (other jobs share it)")
    print(
        f"clients {args.clients}, {args.duration:g} s per phase, max_tokens {args.max_tokens}, "
        f"temperature {args.temperature:g}, {args.threads} threads per server, sazanami backend {args.backend}"
    )
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="serve_load-") as tmp:
        for model, gguf in ggufs.items():
            print(f"model {model}: {gguf}", flush=True)
            arms: list[tuple[str, int | None]] = []
            if "sazanami" in servers:
                cohorts = [int(c) for c in args.cohorts.split(",")]
                arms += [(f"sazanami (cohorts={c})" if len(cohorts) > 1 else "sazanami", c) for c in cohorts]
            if "llama-server" in servers:
                if gguf is None:
                    print(f"  {model} has no GGUF: llama-server skipped", flush=True)
                else:
                    arms.append(("llama-server", None))
            first: dict[str, float] = {}
            for n in clients:
                for arm, cohorts in arms:
                    port = free_port()
                    if cohorts is None:
                        cmd = llama_server_command(binary, gguf, model, port, n, args.threads)
                    else:
                        cmd = sazanami_command(args, model, port, n, cohorts)
                    phase = measure(args, arm, cmd, model, n, Path(tmp))
                    first.setdefault(arm, phase.tps)
                    rows.append(phase.row(first[arm]) | ({"error_kinds": phase.error_kinds} if phase.errors else {}))
                    print(json.dumps(rows[-1]), flush=True)

    print()
    print_table(rows)
    compared = ratios(rows)
    if compared:
        print()
        print("sazanami / llama-server (tok/s: above 1 = sazanami faster; TTFT p50: below 1 = sazanami faster)")
        print_table(compared)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"command": sys.argv, "machine": cpu, "phases": rows, "ratios": compared}, f, indent=2)
    if args.check:
        last = {(r["model"], r["server"]): r for r in rows if r["server"].startswith("sazanami")}
        ok = bool(last) and all(r["errors"] == 0 and (r["x_first"] or 0) >= 4 for r in last.values())
        print(f"target (0 errors, ≥ 4× the first phase): {'met' if ok else 'NOT met'}")
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
