"""What a row asks for and how each of its tokens is chosen: the request parameters
(:mod:`~sazanami.sampling.params`, :mod:`~sazanami.sampling.beam_params`), rows and their
completions (:mod:`~sazanami.sampling.rows`), the per-step sampler
(:mod:`~sazanami.sampling.sampler`) and its hooks for transformers' ``generate``."""
