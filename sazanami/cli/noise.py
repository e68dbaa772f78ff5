"""``sazanami noise``: colored noise and its fitted spectral slope."""

from __future__ import annotations

import click

from sazanami.noise import colored as nz
from sazanami.noise import spectra


@click.command()
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
    if method == "stream":
        src = nz.ColoredNoise(beta, streams, seed, max_steps=steps)
        x = src.steps(steps)
    else:
        x = nz.colored_noise_block(beta, steps, streams, seed=seed)
    slope = spectra.psd_slope(x)
    x = x.double()
    click.echo(f"beta={beta:g} method={method} streams={streams} steps={steps}")
    click.echo(
        f"fitted slope: {slope:.3f} (target {beta:g}); mean {float(x.mean()):+.3f}, variance {float(x.var()):.3f}"
    )
    if plot:
        spectra.plot_psd(x, beta, plot)
        click.echo(f"plot: {plot}")
