"""`bluegreen chaos`: randomized fault injection against the real services.

Each run, on its own databases, topics and consumer group on the local stack: seed
blue, start `bluegreen cdc`, two `bluegreen consume` and `bluegreen snapshot` as an
operator would, write an adversarial but valid load on blue, kill -9 components at
moments drawn from the run's seed and restart them, then stop writing and check that
green converges to transform(blue), row by row, two independent ways.

Modules: ``schedule`` (which faults, when: pure); ``load`` (the writers:
``load_scenario`` and its ``load_ops``, ``load_hot``, over ``load_rows`` and
``load_common``); ``services`` (the bluegreen processes); ``faults`` (kill and
restart); ``snapshot_watch`` (snapshot progress); ``check`` (convergence and
evidence); ``run`` (one run and many) and ``report`` (its record and verdict).
"""
