"""bench: reproducible meta-learning benchmarks.

The package is layered by role; a module imports only from its own layer and the layers above it
in this list (``tests/test_imports.py`` holds the code to it):

1. foundation, the modules directly in ``bench/``: ``errors``, ``formatting``, ``config`` (suite
   files), ``registry``, ``seeding``, ``stats``, ``records`` (the run record's schema and atomic
   file IO) and ``identity`` (which records are comparable);
2. ``datasets/`` (reading and verifying data files, ``download``) and ``models/`` (functional networks);
3. ``tasks/``: episodes as pure functions of (suite, split, seed, index);
4. ``algorithms/``: one small file per algorithm, registered by name;
5. ``run/``: planning a run, the training loop, executors, checkpoints, timing, the environment;
6. ``results/``: leaderboard entries and tables, ``bench check``, reports, figures, reruns;
7. ``measure/``: ``bench perf``, ``bench cost`` and the other measurements of bench itself;
8. ``api``: one function per command, for notebooks and the CLI alike;
9. ``cli/``: ``python -m bench``, a thin command line over ``api``.
"""

__version__ = "0.1.0"
DISTRIBUTION = "metalearn-bench"  # the name on the package index (`bench` there is another project)
