"""Measurement of outputs: diversity, coherence and spectra (:mod:`~sazanami.measure.metrics`) and
the sentence embeddings they use (:mod:`~sazanami.measure.embeddings`)."""
