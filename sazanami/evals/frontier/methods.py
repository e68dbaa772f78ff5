"""The frontier's method catalogue: sampler families, their sweeps, and the settings they expand to.

Moved here from ``sazanami/frontier.py``; :data:`METHODS` is the ``--methods`` vocabulary.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sazanami.errors import ParameterError

if TYPE_CHECKING:
    from sazanami.sampling.params import SamplingParams

#: Base temperature of the noise methods: a point of the temperature sweep (their σ → 0 limit),
#: below T = 1, so noise can move a setting either way along the frontier.
NOISE_T0 = 0.8


@dataclass(frozen=True)
class Method:
    """A sampler family and its sweep: one curve on the frontier plot.

    ``sweep`` names what varies: a :class:`~sazanami.sampling.params.SamplingParams` field, or
    ``sigma`` (the fluctuation's σ). ``betas`` adds off-curve points: the fluctuation at its
    preset σ (or the base setting) with these noise colors instead.
    """

    name: str
    description: str
    sweep: str
    values: tuple[float, ...]
    quick_values: tuple[float, ...]
    base: tuple[tuple[str, Any], ...] = ()
    fluctuation: str | None = None
    """Preset name or JSON object (as a string) of the fluctuation, if any."""
    betas: tuple[float, ...] = ()


def _noise(
    name: str,
    sweep: str,
    values: tuple[float, ...],
    quick: tuple[float, ...],
    description: str,
    betas: tuple[float, ...] = (),
    fluctuation: str | None = None,
) -> Method:
    return Method(name, description, sweep, values, quick, (("temperature", NOISE_T0),), fluctuation or name, betas)


_SIGMA_T = (0.15, 0.3, 0.6, 1.0)
_SIGMA_LOGITS = (0.05, 0.1, 0.2, 0.3)
_SIGMA_HIDDEN = (0.02, 0.05, 0.1, 0.2)

#: Every method the benchmark knows, by name (the ``--methods`` vocabulary).
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "temperature",
            "temperature sweep (the reference frontier)",
            "temperature",
            (0.3, 0.4, 0.55, 0.7, 0.8, 0.85, 1.0, 1.15, 1.3),
            (0.4, 0.7, 1.0, 1.3),
        ),
        Method(
            "top_p",
            "nucleus sampling at T = 1",
            "top_p",
            (0.5, 0.7, 0.8, 0.9, 0.95),
            (0.7, 0.9),
            (("temperature", 1.0),),
        ),
        Method("min_p", "min-p at T = 1", "min_p", (0.02, 0.05, 0.15, 0.3), (0.05, 0.15), (("temperature", 1.0),)),
        Method(
            "typical",
            "locally typical sampling at T = 1",
            "typical_p",
            (0.5, 0.7, 0.9, 0.95),
            (0.7, 0.9),
            (("temperature", 1.0),),
        ),
        Method(
            "dynatemp",
            "llama.cpp dynamic temperature, range 0.5, T0 swept",
            "temperature",
            (0.6, 0.8, 1.1, 1.3),
            (0.8, 1.1),
            (("dynatemp_range", 0.5),),
        ),
        Method(
            "mirostat",
            "mirostat v2 (η = 0.1), target surprise τ in bits",
            "mirostat_tau",
            (2.0, 3.0, 5.0, 7.0),
            (3.0, 5.0),
            (("temperature", 1.0),),
        ),
        _noise(
            "white-logits",
            "sigma",
            _SIGMA_LOGITS,
            (0.1, 0.2),
            "white noise on the logits, T0 = 0.8",
            fluctuation='{"logits": {"sigma": 0.1, "beta": 0.0}}',
        ),
        _noise("white-temperature", "sigma", _SIGMA_T, (0.3, 0.6), "white noise on log T, T0 = 0.8"),
        _noise("pink-temperature", "sigma", _SIGMA_T, (0.3, 0.6), "pink noise on log T, T0 = 0.8"),
        _noise("brown-temperature", "sigma", _SIGMA_T, (0.3, 0.6), "brown noise on log T, T0 = 0.8"),
        _noise("pink-logits", "sigma", _SIGMA_LOGITS, (0.1, 0.2), "pink noise on the logits, T0 = 0.8", betas=(2.0,)),
        _noise(
            "pink-draw",
            "temperature",
            (0.6, 0.8, 1.1, 1.3),
            (0.8, 1.1),
            "pink Gumbel-max draw (no σ), temperature swept",
            betas=(2.0,),
        ),
        _noise(
            "white-draw",
            "temperature",
            (0.6, 0.8, 1.1, 1.3),
            (0.8, 1.1),
            "white Gumbel-max draw: pink-draw's β = 0 control, exact sampling like temperature",
            fluctuation='{"draw": {"sigma": 0.0, "beta": 0.0}}',
        ),
        _noise(
            "pink-hidden",
            "sigma",
            _SIGMA_HIDDEN,
            (0.05, 0.1),
            "pink noise on the middle layer, T0 = 0.8",
            betas=(0.0, 2.0),
        ),
        _noise(
            "pink-embedding",
            "sigma",
            _SIGMA_HIDDEN,
            (0.05, 0.1),
            "pink noise on input embeddings, T0 = 0.8",
            betas=(0.0, 2.0),
        ),
    )
}

# -- llama.cpp's samplers (top-nσ, XTC, DRY): one curve each, added apart from the list above ----------
METHODS.update(
    {
        m.name: m
        for m in (
            Method(
                "top_n_sigma",
                "top-nσ at T = 1, n swept",
                "top_n_sigma",
                (0.5, 1.0, 1.5, 2.0, 3.0),
                (1.0, 2.0),
                (("temperature", 1.0),),
            ),
            Method(
                "xtc",
                "XTC (threshold 0.1) at T = 1, probability swept",
                "xtc_probability",
                (0.1, 0.3, 0.5, 0.8),
                (0.3, 0.5),
                (("temperature", 1.0), ("xtc_threshold", 0.1)),
            ),
            Method(
                "dry",
                "DRY (base 1.75, allowed length 2) at T = 0.8, multiplier swept",
                "dry_multiplier",
                (0.2, 0.5, 0.8, 1.5),
                (0.5, 0.8),
                (("temperature", 0.8),),
            ),
        )
    }
)


@dataclass(frozen=True)
class Setting:
    """One point of a method's sweep: the sampling parameters that generate it."""

    method: str
    sweep: str
    """What varies along the method's curve; ``beta`` for an off-curve noise-color point."""
    value: float
    params: tuple[tuple[str, Any], ...]
    """SamplingParams keyword arguments (fluctuation in its JSON form), sorted by name."""

    @property
    def label(self) -> str:
        symbol = {
            "temperature": "T",
            "sigma": "σ",
            "beta": "β",
            "mirostat_tau": "τ",
            "top_p": "p",
            "min_p": "p",
            "typical_p": "p",
        }
        return f"{symbol.get(self.sweep, self.sweep)}={self.value:g}"

    @property
    def name(self) -> str:
        return f"{self.method} {self.label}"

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def key(self) -> str:
        """Canonical JSON of the parameters: the setting's part of the cache key."""
        return json.dumps(self.kwargs, sort_keys=True, separators=(",", ":"))

    @property
    def perturbs_forward(self) -> bool:
        """Noise inside the forward pass: the engine's log-probs are not the clean model's."""
        fl = self.kwargs.get("fluctuation") or {}
        return bool(fl.get("hidden") or fl.get("embedding"))

    def sampling_params(self, max_tokens: int) -> SamplingParams:
        from sazanami.sampling.params import SamplingParams

        return SamplingParams(max_tokens=max_tokens, trace=True, **self.kwargs)


def _setting(method: Method, sweep: str, value: float, kwargs: dict[str, Any]) -> Setting:
    return Setting(method.name, sweep, float(value), tuple(sorted(kwargs.items())))


def method_settings(
    methods: Iterable[str] | None = None, quick: bool = False, catalogue: dict[str, Method] | None = None
) -> list[Setting]:
    """The settings of ``methods`` (default: all of ``catalogue``, itself :data:`METHODS` by default), in order.

    Quick mode uses each method's shorter sweep (a subset of the full one, so a full run
    reuses a quick run's cached generations) and leaves out the off-curve β points.
    """
    catalogue = METHODS if catalogue is None else catalogue
    names = list(catalogue) if methods is None else list(methods)
    unknown = [m for m in names if m not in catalogue]
    if unknown:
        raise ParameterError("methods", f"unknown method {unknown[0]!r}; known: {', '.join(catalogue)}")
    if not names:
        raise ParameterError("methods", "methods must name at least one method")
    out: list[Setting] = []
    for name in dict.fromkeys(names):
        m = catalogue[name]
        base = dict(m.base)
        fl = None
        if m.fluctuation is not None:
            from sazanami.noise.fluctuation import Fluctuation

            fl = Fluctuation.parse(m.fluctuation)
        for v in m.quick_values if quick else m.values:
            kw = dict(base)
            if m.sweep == "sigma":
                kw["fluctuation"] = fl.override(sigma=v).to_dict()
            else:
                kw[m.sweep] = v
                if fl is not None:
                    kw["fluctuation"] = fl.to_dict()
            out.append(_setting(m, m.sweep, v, kw))
        if fl is not None and not quick:
            for b in m.betas:
                out.append(_setting(m, "beta", b, base | {"fluctuation": fl.override(beta=b).to_dict()}))
    return out
