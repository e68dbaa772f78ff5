"""The decoding loop (:mod:`~sazanami.engine.loop`, :class:`~sazanami.engine.loop.Engine`): the one
decode step every driver calls, stochastic beams, tool results injected mid-generation, the
prefix cache, opening an engine from a spec, and Ray replicas of it."""
