"""``wrenmq bench``: the load generator, the scenarios and the side-by-side comparison with Mosquitto.

Modules: ``frames`` (pre-encoded PUBLISH batches, the bulk stream reader), ``generator`` (worker
processes for streams), ``crowd`` (a worker holding thousands of connections), ``brokers``
(wrenmq and Mosquitto as subprocesses with equivalent settings), ``measure`` (settings, metrics,
workers, CPU use), the scenarios by concept (``streams``, ``stored``, ``fleet``) and their registry
(``scenarios``), ``runner`` (alternation, rounds, progress), ``report`` (table and JSON),
``attribution`` (where a connection's bytes go), ``procfs``, ``cli``.
"""
