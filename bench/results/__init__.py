"""What the stored run records show: ``entries`` decides which records make one leaderboard row (one
identity, the newest record of each seed, whole); ``leaderboard`` renders the tables with confidence
intervals and ranks; ``check`` compares a run with a committed baseline (``bench check``);
``report`` and ``figures`` build the paper-ready report; ``reproduce`` reruns a stored record and
compares it episode by episode.

May import the foundation modules, the domain packages and ``run`` (``check`` and ``reproduce``
run suites); never ``measure``, ``api`` or ``cli``."""
