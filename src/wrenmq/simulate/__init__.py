"""``wrenmq simulate devices``: simulated devices that speak the device topic scheme, for demos and load tests.

- :mod:`.state`: one device's state machine, sans-I/O: commands and the time in, status and event
  payloads out (and the subscriptions a ``join``/``leave`` calls for).
- :mod:`.device`: the asyncio side: one :class:`wrenmq.client.Client` per device, all in one event loop.
- :mod:`.cli`: the ``simulate devices`` flags and the status line. Imported whenever ``wrenmq`` builds
  its parser, so it imports only argparse at the top.
"""
