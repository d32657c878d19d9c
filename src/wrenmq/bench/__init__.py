"""``wrenmq bench``: the load generator, the scenarios and the side-by-side comparison with Mosquitto.

Modules: ``frames`` (pre-encoded PUBLISH batches, the bulk stream reader), ``generator`` (worker
processes), ``brokers`` (wrenmq and Mosquitto as subprocesses with equivalent settings),
``scenarios``, ``runner`` (alternation, rounds, progress), ``report`` (table and JSON), ``cli``.
"""
