"""Noise and where it enters decoding: colored sources (:mod:`~sazanami.noise.colored`), their
spectra (:mod:`~sazanami.noise.spectra`), exact draws from noise (:mod:`~sazanami.noise.draws`)
and the fluctuation of decoding (:mod:`~sazanami.noise.fluctuation`)."""
