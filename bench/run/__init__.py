"""Running a suite: ``runner`` plans a run (``plan_run``: suite, algorithms, seeds, device, checked before
any work) and holds the training loop (``TrainingLoop``, ``TrainingState``); ``executors`` runs the
planned jobs locally or on Ray with one lock per job; ``execution`` holds the options that change
how a run executes but not what it computes (task chunks, threads, autocast) and the measured
chunk choice; ``checkpoints`` saves and restores a run atomically; ``timing`` times steps honestly
(CUDA events on a GPU); ``environment`` describes the machine a record was made on; ``cache``
lists and clears the data and choice caches.

May import the foundation modules, ``datasets``, ``models``, ``tasks`` and ``algorithms``; never
``results``, ``measure``, ``api`` or ``cli``."""
