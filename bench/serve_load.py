"""Load on ``sazanami serve``: N concurrent streaming clients on loopback for a bounded time.

    python bench/serve_load.py [--clients 32] [--duration 30] [--max-tokens 32] [--cohorts 2]
                               [--model smollm2-135m] [--check]

Starts the server in a subprocess on a free loopback port, then runs, in one process run,
phases of ``--duration`` seconds each (clients stop sending then; requests in flight finish):

1. one client alone — the reference;
2. ``--clients`` clients at once, for each ``--cohorts`` setting (a comma list restarts the
   server per setting: ``1`` = late requests join the next batch, ``2`` = the next step).

Each client is the official ``openai`` AsyncOpenAI client streaming chat completions
(``stream_options.include_usage``) in a loop. Reported per phase: requests/s, tokens/s
(generated tokens of finished requests over the phase's wall time, tail included), p50/p99
time to first token, errors, the server's peak resident memory, and the ratio of aggregate
tokens/s to the single client's. ``--check`` exits 1 unless the last phase has 0 errors and
a ratio ≥ 4 (the target for 32 clients). Load goes only to 127.0.0.1 and stops by itself.
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
import threading
import time
import urllib.request
from dataclasses import dataclass, field

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


@dataclass
class Phase:
    name: str
    clients: int
    ttft: list[float] = field(default_factory=list)
    tokens: int = 0
    requests: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    wall: float = 0.0
    peak_rss: int = 0

    def row(self, single_tps: float | None) -> dict[str, object]:
        tps = self.tokens / self.wall if self.wall else 0.0
        q = statistics.quantiles(self.ttft, n=100, method="inclusive") if len(self.ttft) >= 2 else self.ttft * 99
        return {
            "phase": self.name,
            "clients": self.clients,
            "requests": self.requests,
            "req/s": round(self.requests / self.wall, 3) if self.wall else 0.0,
            "tok/s": round(tps, 2),
            "ttft_p50_s": round(q[49], 3) if q else None,
            "ttft_p99_s": round(q[98], 3) if q else None,
            "errors": self.errors,
            "peak_rss_mib": round(self.peak_rss / 2**20),
            "x_single": round(tps / single_tps, 2) if single_tps else None,
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, cohorts: int, clients: int, max_tokens: int, threads: int) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "sazanami.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--model", model, "--cohorts", str(cohorts), "--max-concurrent", str(max(64, clients)),
        "--max-batch-rows", str(max(64, clients)), "--max-tokens", str(max(max_tokens, 64)), "--threads", str(threads),
        "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.25)
    proc.kill()
    raise SystemExit("the server did not start in 300 s")


def watch_memory(pid: int, phase: Phase, stop: threading.Event) -> None:
    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            phase.peak_rss = max(phase.peak_rss, proc.memory_info().rss)
        except psutil.Error:
            return
        stop.wait(0.1)


async def client_loop(base: str, model: str, phase: Phase, until: float, max_tokens: int, seed: int) -> None:
    import openai

    rng = random.Random(seed)
    async with openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0, timeout=600) as client:
        while time.monotonic() < until:
            t0 = time.monotonic()
            first = None
            try:
                stream = await client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": rng.choice(PROMPTS)}],
                    max_tokens=max_tokens,
                    seed=rng.randrange(2**31),
                    stream=True,
                    stream_options={"include_usage": True},
                )
                used = 0
                async for chunk in stream:
                    if first is None and chunk.choices and chunk.choices[0].delta.content:
                        first = time.monotonic() - t0
                    if chunk.usage is not None:
                        used = chunk.usage.completion_tokens
                phase.requests += 1
                phase.tokens += used
                if first is not None:
                    phase.ttft.append(first)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                phase.errors += 1
                kind = type(exc).__name__
                phase.error_kinds[kind] = phase.error_kinds.get(kind, 0) + 1
                await asyncio.sleep(0.1)


def run_phase(name: str, base: str, model: str, clients: int, duration: float, max_tokens: int, pid: int) -> Phase:
    phase = Phase(name, clients)
    stop = threading.Event()
    watcher = threading.Thread(target=watch_memory, args=(pid, phase, stop), daemon=True)
    watcher.start()

    async def main() -> None:
        until = time.monotonic() + duration
        await asyncio.gather(*(client_loop(base, model, phase, until, max_tokens, seed=i) for i in range(clients)))

    t = time.monotonic()
    asyncio.run(main())
    phase.wall = time.monotonic() - t
    stop.set()
    watcher.join()
    return phase


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds each phase sends requests")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--cohorts", default="2", help="comma list of batcher cohort settings to compare")
    ap.add_argument("--threads", type=int, default=0, help="server's torch threads (0 = torch's default)")
    ap.add_argument("--check", action="store_true", help="exit 1 unless 0 errors and ≥ 4× the single client")
    ap.add_argument("--json", dest="json_out", default=None, help="also write the results to this file")
    args = ap.parse_args()
    settings = [int(c) for c in args.cohorts.split(",")]

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), None)
    cpu = cpu or platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (other jobs share it)")
    print(
        f"model {args.model}, {args.clients} clients, {args.duration:g} s per phase, max_tokens {args.max_tokens}, "
        f"server threads {args.threads or 'default'}"
    )
    rows, single_tps = [], None
    for k, cohorts in enumerate(settings):
        port = free_port()
        proc = start_server(args.model, port, cohorts, args.clients, args.max_tokens, args.threads)
        base = f"http://127.0.0.1:{port}/v1"
        try:
            run_phase("warm-up", base, args.model, 1, 0.1, 4, proc.pid)
            if k == 0:
                single = run_phase(
                    f"1 client (cohorts={cohorts})", base, args.model, 1, args.duration, args.max_tokens, proc.pid
                )
                single_tps = single.tokens / single.wall
                rows.append(single.row(single_tps))
                print(json.dumps(rows[-1]), flush=True)
            name = f"{args.clients} clients (cohorts={cohorts})"
            many = run_phase(name, base, args.model, args.clients, args.duration, args.max_tokens, proc.pid)
            rows.append(many.row(single_tps) | ({"error_kinds": many.error_kinds} if many.errors else {}))
            print(json.dumps(rows[-1]), flush=True)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
                print("server batcher:", json.loads(r.read())["stats"], flush=True)
        finally:
            proc.terminate()
            proc.wait(30)

    print()
    cols = list(rows[0])
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r.get(c)) for c in cols))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=2)
    if args.check:
        last = rows[-1]
        ok = last["errors"] == 0 and (last["x_single"] or 0) >= 4
        print(f"target (0 errors, ≥ 4× one client): {'met' if ok else 'NOT met'}")
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
