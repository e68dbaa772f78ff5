"""An agent loop with OpenAI function calling against a live sazanami server, grammar on vs off.

    python bench/agent_tools.py [--runs 50] [--model qwen2.5-coder-0.5b] [--threads 1]
                                [--out bench/results/agent_tools] [--quick]

The server (``create_app`` on the model, llama.cpp backend) runs in this process on a loopback
port; the agent is the official ``openai`` client. Three tools the agent runs itself:
``convert_units`` (length, mass, temperature), ``calculate`` (arithmetic, sazanami's CALC
evaluator) and ``lookup`` (a table of city facts), and ``final_answer`` (smolagents'
convention: the model ends the run by calling it with the number). Each task needs 1–3 tool
calls before the answer. A run is one task with one seed: up to :data:`MAX_TURNS` turns with
``tool_choice: auto`` (each call validated against its schema, run, its result sent back as a
``tool`` message; an answer in words also ends the run), then one turn with ``final_answer``
named — at once when the model repeats only calls it made before (a loop guard). Run ``i`` takes task ``i mod len(TASKS)`` and seed ``i``, once with the grammar (the
default) and once with ``tool_grammar: false`` — the model then writes calls unconstrained and
the server parses them afterwards, as llama.cpp-style tool parsers do; the two modes alternate.

Reported per mode: calls emitted, the share that parse and validate against their function's
schema (a call attempt the server could not parse counts as emitted and invalid: an answer
that holds a ``<tool_call>`` tag or starts with ``{``/a json fence and names a ``"name"``), task
success (the final answer's numbers include the expected value within 1 %), turns, seconds.
Writes ``runs.jsonl`` (one line per run and mode: the calls, results, answer, verdicts) and
``summary.json`` (machine, date, command, the table; rewritten after every run) under ``--out``;
``--quick`` = 2 runs per mode, under ``--out``/quick; ``--report`` prints the table of
docs/FUNCTION_CALLING.md from ``summary.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema

MAX_TURNS = 3
"""Turns with ``tool_choice: auto`` before the agent demands ``final_answer`` (a named choice)."""
SYSTEM = (
    "You are a precise assistant with tools. Use convert_units, calculate or lookup for conversions, "
    "arithmetic and facts, one call at a time, and use each result. Example: for 'What is 2 km in m?' "
    'you call convert_units with {"value": 2, "from_unit": "km", "to_unit": "m"}, the result is 2000, '
    'then you call final_answer with {"answer": 2000}. Always finish by calling final_answer with the number.'
)


# -- the tools (run by the agent) -----------------------------------------------------------------
UNITS = {  # unit → (quantity, factor to the base unit, offset)
    "m": ("length", 1.0, 0.0),
    "km": ("length", 1000.0, 0.0),
    "ft": ("length", 0.3048, 0.0),
    "mi": ("length", 1609.344, 0.0),
    "kg": ("mass", 1.0, 0.0),
    "lb": ("mass", 0.45359237, 0.0),
    "c": ("temperature", 1.0, 0.0),
    "f": ("temperature", 5 / 9, -32 * 5 / 9),
}
CITIES = {
    "paris": {"population": 2102650, "elevation_m": 35, "country": "France", "area_km2": 105.4},
    "lyon": {"population": 522250, "elevation_m": 173, "country": "France", "area_km2": 47.9},
    "denver": {"population": 715522, "elevation_m": 1609, "country": "USA", "area_km2": 401.3},
    "osaka": {"population": 2752412, "elevation_m": 12, "country": "Japan", "area_km2": 225.2},
    "quito": {"population": 2800388, "elevation_m": 2850, "country": "Ecuador", "area_km2": 372.4},
}
FIELDS = ["population", "elevation_m", "country", "area_km2"]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "convert_units",
            "description": "Convert a value between units: m, km, ft, mi (length), kg, lb (mass), c, f (temperature).",
            "parameters": {
                "type": "object",
                "properties": {
                    "value": {"type": "number"},
                    "from_unit": {"type": "string", "enum": list(UNITS)},
                    "to_unit": {"type": "string", "enum": list(UNITS)},
                },
                "required": ["value", "from_unit", "to_unit"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "calculate",
            "description": "Evaluate an arithmetic expression (+ - * / and parentheses).",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string", "maxLength": 200}},
                "required": ["expression"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look up a fact about a city: population, elevation_m, country or area_km2.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "enum": [c.title() for c in CITIES]},
                    "field": {"type": "string", "enum": FIELDS},
                },
                "required": ["city", "field"],
                "additionalProperties": False,
            },
        },
    },
]
FINAL = {
    "type": "function",
    "function": {
        "name": "final_answer",
        "description": "Give the final answer to the user's question (a number) and stop.",
        "parameters": {
            "type": "object",
            "properties": {"answer": {"type": "number"}},
            "required": ["answer"],
            "additionalProperties": False,
        },
    },
}
"""How the agent ends (smolagents' convention): the model calls it with the number."""
TOOLS.append(FINAL)
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def convert_units(value: float, from_unit: str, to_unit: str) -> str:
    (q1, f1, o1), (q2, f2, o2) = UNITS[from_unit], UNITS[to_unit]
    if q1 != q2:
        return f"error: cannot convert {q1} to {q2}"
    base = value * f1 + o1
    return format((base - o2) / f2, ".6g")


def calculate(expression: str) -> str:
    from sazanami.islands import ToolError, calc

    try:
        return calc(expression)
    except ToolError as exc:
        return f"error: {exc}"


def lookup(city: str, field: str) -> str:
    return str(CITIES[city.lower()][field])


def final_answer(answer: float) -> str:
    return str(answer)


RUN = {"convert_units": convert_units, "calculate": calculate, "lookup": lookup, "final_answer": final_answer}

# -- the tasks: (question, expected number, calls needed) ------------------------------------------
TASKS: list[tuple[str, float, int]] = [
    ("Convert 42 km to miles.", 42000 / 1609.344, 1),
    ("What is 17 * 23 + 5?", 17 * 23 + 5, 1),
    ("What is the population of Lyon?", 522250, 1),
    ("What is 98.6 degrees Fahrenheit in Celsius?", 37.0, 1),
    ("How much is 150 lb in kg?", 150 * 0.45359237, 1),
    ("What is the elevation of Denver in feet?", 1609 / 0.3048, 2),
    ("What is the elevation of Quito in feet?", 2850 / 0.3048, 2),
    ("How many more people live in Paris than in Lyon?", 2102650 - 522250, 3),
    ("What is the combined population of Osaka and Lyon?", 2752412 + 522250, 3),
    ("What is the population density of Paris in people per square km (population divided by area)?",
     2102650 / 105.4, 3),
]  # fmt: skip


def run_call(call: Any) -> tuple[bool, str]:
    """(parses and validates, the result text the agent sends back)."""
    name = call.function.name
    try:
        args = json.loads(call.function.arguments)
        jsonschema.validate(args, SCHEMAS[name])
    except (ValueError, KeyError, jsonschema.ValidationError) as exc:
        return False, f"error: invalid arguments: {str(exc).splitlines()[0]}"
    return True, RUN[name](**args)


_ATTEMPT = re.compile(r'<tool_call>|^\s*(```(json)?\s*)?\{[\s\S]*"name"')


def call_attempts(content: str | None) -> int:
    """Call attempts in an answer the server did not parse as calls (0 or 1 per answer)."""
    return 1 if content and _ATTEMPT.search(content) else 0


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?")


def solved(answer: str | None, expected: float) -> bool:
    """The answer's numbers include ``expected`` within 1 %."""
    for m in _NUMBER.finditer(answer or ""):
        try:
            value = float(m.group().replace(",", ""))
        except ValueError:
            continue
        if abs(value - expected) <= 0.01 * abs(expected) + 1e-9:
            return True
    return False


def agent(client: Any, model: str, task: tuple[str, float, int], seed: int, grammar: bool) -> dict[str, Any]:
    """One run of the loop; its record."""
    question, expected, needed = task
    messages: list[Any] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    extra = {} if grammar else {"tool_grammar": False}
    calls, valid, attempts, answer, turns = 0, 0, 0, None, 0
    log: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    final = False  # demand final_answer next (after MAX_TURNS, or when the model only repeats itself)
    t0 = time.monotonic()
    for turn in range(MAX_TURNS + 1):
        final = final or turn == MAX_TURNS
        choice: Any = {"type": "function", "function": {"name": "final_answer"}} if final else "auto"
        r = client.chat.completions.create(
            model=model, messages=messages, tools=TOOLS, tool_choice=choice, seed=seed * 100 + turn,
            temperature=0.7, max_tokens=96, extra_body=extra,
        )  # fmt: skip
        turns += 1
        msg = r.choices[0].message
        if not msg.tool_calls:  # an answer in words (or a call the server could not parse)
            attempts += call_attempts(msg.content)
            answer = msg.content
            log.append({"turn": turn, "content": msg.content, "finish_reason": r.choices[0].finish_reason})
            break
        messages.append(msg)
        repeats = [(c.function.name, c.function.arguments) in seen for c in msg.tool_calls]
        final = all(repeats)  # the results are there already: ask for the answer
        for call in msg.tool_calls:
            seen.add((call.function.name, call.function.arguments))
            ok, result = run_call(call)
            calls += 1
            valid += ok
            log.append({"turn": turn, "call": call.function.name, "arguments": call.function.arguments,
                        "valid": ok, "result": result})  # fmt: skip
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
            if ok and call.function.name == "final_answer":
                answer = result
        if answer is not None or (final and turn == MAX_TURNS):
            break
    emitted = calls + attempts
    return {
        "task": question, "expected": expected, "needed": needed, "seed": seed, "grammar": grammar,
        "calls": calls, "valid": valid, "unparsed_attempts": attempts, "emitted": emitted,
        "success": solved(answer, expected), "answer": answer, "turns": turns,
        "seconds": round(time.monotonic() - t0, 2), "log": log,
    }  # fmt: skip


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for grammar in (True, False):
        rs = [r for r in records if r["grammar"] is grammar]
        if not rs:
            continue
        emitted = sum(r["emitted"] for r in rs)
        out["on" if grammar else "off"] = {
            "runs": len(rs),
            "calls_emitted": emitted,
            "calls_valid": sum(r["valid"] for r in rs),
            "valid_share": round(sum(r["valid"] for r in rs) / emitted, 4) if emitted else None,
            "task_success": round(sum(r["success"] for r in rs) / len(rs), 4),
            "mean_turns": round(sum(r["turns"] for r in rs) / len(rs), 2),
            "mean_seconds": round(sum(r["seconds"] for r in rs) / len(rs), 2),
        }
    return out


def table(summary: dict[str, Any]) -> str:
    lines = [
        "| grammar | runs | calls emitted | parse + validate | task success | turns (mean) | s / run |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, s in summary.items():
        share = "–" if s["valid_share"] is None else f"{100 * s['valid_share']:.1f} %"
        lines.append(
            f"| {mode} | {s['runs']} | {s['calls_emitted']} | {s['calls_valid']} ({share}) | "
            f"{100 * s['task_success']:.0f} % | {s['mean_turns']} | {s['mean_seconds']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50, help="seeded runs per mode (task = run mod the task count)")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    ap.add_argument("--out", default="bench/results/agent_tools")
    ap.add_argument("--quick", action="store_true", help="2 runs per mode (a smoke test)")
    ap.add_argument("--report", action="store_true", help="print the docs' table from --out/summary.json and exit")
    args = ap.parse_args(argv)
    if args.report:
        done = json.loads((Path(args.out) / "summary.json").read_text())
        print(table(done["results"]))
        print(f"\n{done['finished_runs']} runs on {done['machine'].get('cpu') or done['machine']['platform']}, "
              f"{done['date']}: `{done['command']}`")  # fmt: skip
        return 0
    runs = 2 if args.quick else args.runs

    import openai

    from sazanami import models
    from sazanami.engine.loop import Engine
    from sazanami.server import Limits, create_app
    from sazanami.server.testing import serving

    engine = Engine(models.load(args.model, backend="llamacpp", threads=args.threads))
    out = Path(args.out) / ("quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    started = time.time()
    command = " ".join(["python", *sys.argv])

    def write_summary() -> dict[str, Any]:
        summary = {
            "machine": {"platform": platform.platform(), "cpu": models.cpu_model(), "cpus": os.cpu_count()},
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": command,
            "model": args.model,
            "backend": "llamacpp",
            "threads": args.threads,
            "runs_per_mode": runs,
            "finished_runs": len(records),
            "max_turns": MAX_TURNS,
            "wall_s": round(time.time() - started, 1),
            "results": summarise(records),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    with serving(create_app(args.model, Limits(max_tokens=256, max_concurrent=1), engine=engine)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
        with open(out / "runs.jsonl", "w") as f:
            for i in range(runs):  # the modes interleaved: a run cut short still compares them
                for grammar in (True, False):
                    rec = agent(client, args.model, TASKS[i % len(TASKS)], i, grammar)
                    records.append(rec)
                    f.write(json.dumps(rec) + "\n")
                    f.flush()
                    summary = write_summary()
                    print(
                        f"[{'on' if grammar else 'off'} {i + 1}/{runs}] {rec['task'][:40]!r}: calls {rec['valid']}/"
                        f"{rec['emitted']} valid, {'solved' if rec['success'] else 'failed'} ({rec['seconds']} s)",
                        file=sys.stderr,
                    )
    print(table(summary["results"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
