"""The ``sazanami`` command line. Thin layer over the Python API.

User mistakes (``SazanamiError``) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from sazanami.errors import SazanamiError
from sazanami.islands.cli_options import island_options
from sazanami.models import BACKENDS, DEFAULT_MODEL


class _Group(click.Group):
    """Turns sazanami's own errors into one-line messages (no tracebacks)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SazanamiError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="sazanami")
def main() -> None:
    """sazanami (漣): noise as a seedable control signal for LLM generation, and search."""


def sampling_options(fn: Any) -> Any:
    """The options every generating command shares; each maps to a SamplingParams field."""
    options = [
        click.option("-n", "n", type=int, default=1, show_default=True, help="Variants per prompt."),
        click.option("--seed", type=int, default=None, help="Request seed (variants derive theirs from it)."),
        click.option("--temperature", "-t", type=float, default=0.7, show_default=True, help="0 = greedy."),
        click.option("--top-k", type=int, default=0, show_default=True, help="0 disables."),
        click.option("--top-p", type=float, default=1.0, show_default=True),
        click.option("--min-p", type=float, default=0.0, show_default=True),
        click.option("--typical-p", type=float, default=1.0, show_default=True),
        click.option("--repetition-penalty", type=float, default=1.0, show_default=True),
        click.option("--presence-penalty", type=float, default=0.0, show_default=True),
        click.option("--frequency-penalty", type=float, default=0.0, show_default=True),
        click.option(
            "--dynatemp-range", type=float, default=0.0, show_default=True, help="llama.cpp dynamic temperature range."
        ),
        click.option("--dynatemp-exponent", type=float, default=1.0, show_default=True),
        click.option(
            "--mirostat-tau",
            type=float,
            default=0.0,
            show_default=True,
            help="Mirostat v2 target surprise (bits); 0 = off.",
        ),
        click.option("--mirostat-eta", type=float, default=0.1, show_default=True),
        click.option("--max-tokens", type=int, default=128, show_default=True),
        click.option("--stop", multiple=True, help="Stop string (repeatable)."),
        click.option("--ignore-eos", is_flag=True, help="Generate past end-of-sequence tokens."),
        click.option("--trace", is_flag=True, help="Record a per-step trace (temperature, entropy, noise)."),
        click.option("--fluctuation", "-f", default=None, help="Preset name, JSON object or FILE.json."),
        click.option("--sigma", type=float, default=None, help="Override the fluctuation's sigma."),
        click.option("--beta", type=float, default=None, help="Override the fluctuation's beta (noise color)."),
        click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True, help="Registry name, HF directory or .gguf file."),
        click.option("--raw", is_flag=True, help="Plain completion: no chat template."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


PARAM_OPTIONS = (
    "n",
    "seed",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "dynatemp_range",
    "dynatemp_exponent",
    "mirostat_tau",
    "mirostat_eta",
    "max_tokens",
    "stop",
    "ignore_eos",
    "trace",
)


def params_from_options(kw: dict[str, Any]) -> Any:
    """Build SamplingParams from CLI options (fluctuation overrides applied)."""
    from sazanami.params import SamplingParams

    values = {k: kw[k] for k in PARAM_OPTIONS}
    values["stop"] = tuple(values["stop"])
    fluct = kw.get("fluctuation")
    if fluct is not None or kw.get("sigma") is not None or kw.get("beta") is not None:
        from sazanami.fluctuation import Fluctuation

        values["fluctuation"] = Fluctuation.parse(fluct or "pink-temperature").override(
            sigma=kw.get("sigma"), beta=kw.get("beta")
        )
    return SamplingParams(**values)


@main.command()
@click.argument("prompt")
@sampling_options
@island_options
@click.option("--stream", is_flag=True, help="Print tokens as they are generated.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (injected spans marked).")
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    help="auto: llama.cpp for GGUF-only models and one row, torch for several rows.",
)
def generate(prompt: str, stream: bool, as_json: bool, **kw: Any) -> None:
    """Generate N variants of PROMPT, each from its own seed."""
    from sazanami.engine import Engine
    from sazanami.islands.cli_options import highlight, islands_from_options
    from sazanami.models import load_for

    params = params_from_options(kw)
    engine = Engine(load_for(kw["model"], kw["backend"], params.n, params.fluctuation))
    islands = islands_from_options(kw, engine.tokenizer)
    fl = params.fluctuation
    if fl is not None and fl.beams is not None:
        completions = engine.generate(prompt, params, kw["raw"], islands=islands)
    else:
        rows = engine.rows_for([prompt], params, kw["raw"], islands=islands)
        if stream and not as_json:
            out: list[Any] = []
            multi = len(rows) > 1
            for deltas in engine.steps(rows, out):
                for d in deltas:
                    if d.text:
                        click.echo(f"[{d.row}] {d.text}\n" if multi else d.text, nl=False)
            click.echo()
            return
        completions = engine.run(rows)
    if as_json:
        doc = {
            "model": kw["model"],
            "backend": engine.backend.capabilities.backend,
            "prompt": prompt,
            "params": params.to_dict(),
            "islands": islands.to_dict() if islands is not None else None,
            "completions": [c.to_dict() for c in completions],
        }
        click.echo(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    for c in completions:
        header = f"── variant {c.index}  seed={c.seed}  tokens={c.completion_tokens}  finish={c.finish_reason}  mean logprob={c.mean_logprob:.2f}"
        click.echo(click.style(header, bold=True))
        click.echo(highlight(c, lambda s: click.style(s, dim=True)).strip() + "\n")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def models(as_json: bool) -> None:
    """List the models sazanami can load and where they are cached."""
    from dataclasses import asdict

    from sazanami.models import available, cache_dir

    infos = available()
    if as_json:
        click.echo(json.dumps([asdict(i) for i in infos], indent=2))
        return
    click.echo(f"cache: {cache_dir()}")
    for i in infos:
        mark = "ready" if i.ready else "missing"
        click.echo(f"{i.name:14} {mark:8} {i.description}\n{'':24}{i.location}\n{'':24}backends: {', '.join(i.backends) or 'none installed'}")
        if i.terms:
            click.echo(f"{'':24}{i.terms}")


@main.command()
@click.option("--beta", type=float, default=1.0, show_default=True, help="Spectral exponent: 0 white, 1 pink, 2 brown.")
@click.option("--steps", type=int, default=4096, show_default=True)
@click.option("--streams", type=int, default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--method",
    type=click.Choice(["stream", "fft"]),
    default="stream",
    show_default=True,
    help="Streaming AR bank or FFT block generator.",
)
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Write a log-log PSD plot (PNG).")
def noise(beta: float, steps: int, streams: int, seed: int, method: str, plot: str | None) -> None:
    """Generate colored noise and print its fitted spectral slope."""
    from sazanami import noise as nz

    if method == "stream":
        src = nz.ColoredNoise(beta, streams, seed, max_steps=steps)
        x = src.steps(steps)
    else:
        x = nz.colored_noise_block(beta, steps, streams, seed=seed)
    slope = nz.psd_slope(x)
    x = x.double()
    click.echo(f"beta={beta:g} method={method} streams={streams} steps={steps}")
    click.echo(
        f"fitted slope: {slope:.3f} (target {beta:g}); mean {float(x.mean()):+.3f}, variance {float(x.var()):.3f}"
    )
    if plot:
        nz.plot_psd(x, beta, plot)
        click.echo(f"plot: {plot}")


def _register_commands() -> None:
    """Commands that live beside their subsystem (imports stay light until they run)."""
    from sazanami.bench_cli import bench_group
    from sazanami.search.commands import flow, search, tree
    from sazanami.server.command import serve

    for command in (search, flow, tree, serve, bench_group):
        main.add_command(command)


_register_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
