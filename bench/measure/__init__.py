"""Measurements of bench itself, each a versioned record under ``results/``: ``perf`` (our
implementations against learn2learn's, side by side in one run), ``perf_chunks`` (which task chunk
is fastest), ``perf_executors`` (what an executor costs over a local run) and ``cost`` (what a whole
suite tier costs on this machine, before running it).

May import every layer below ``api``, ``run`` and ``results`` included; never ``api`` or ``cli``."""
