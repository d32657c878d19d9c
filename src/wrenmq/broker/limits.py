"""The ``[limits]`` section of the config as the compiled hot path reads it.

``LimitsConfig`` is a pydantic model: reading one of its attributes is a generic ``getattr``
through the model's class (hundreds of instructions). ``Limits`` is compiled with the hot path, so
the same read is a struct load. Connections, sessions, admission and subscriptions read
``broker.limits``; what runs once (start-up, listeners, storage) reads ``broker.config``.

The values are not copied by hand: ``__init__`` takes every field of the section by its own name.
What is written here is only the declaration mypyc needs to lay out the struct (name and type, a
placeholder value that the section's replaces at once). A ``[limits]`` setting added to the config
but not declared here fails loudly: compiled, ``setattr`` refuses an undeclared attribute, and
``tests/test_config_sections.py`` checks every field arrives with its value on either build.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..mqtt.server import ServerSettings

if TYPE_CHECKING:
    from ..config import LimitsConfig


class Limits(ServerSettings):
    """The broker's limits; the part every MQTT connection's protocol reads is ``ServerSettings``
    (max_packet_size, maximum_qos, retain_available, receive_maximum, max_inflight_messages, the
    topic alias maxima, connect_timeout, packet_read_timeout), declared there."""

    def __init__(self, section: LimitsConfig) -> None:
        super().__init__()
        # The rest of the section's fields, declared for mypyc; their values come from the loop below.
        self.max_queued_messages: int = 0
        self.max_queued_bytes: int = 0
        self.slow_consumer_timeout: float = 0.0
        self.queue_drop_policy: str = ""
        self.max_session_expiry_interval: int = 0
        self.max_keepalive: int = 0
        self.max_connections: int = 0
        self.max_topic_length: int = 0
        self.max_topic_levels: int = 0
        self.max_subscriptions: int = 0
        self.max_publish_rate: float = 0.0
        self.max_write_buffer: int = 0
        self.write_buffer_high: int = 0
        self.write_buffer_low: int = 0
        for name, value in section:  # every field of [limits], by its own name
            setattr(self, name, value)
        # Derived once, for the per-message path.
        self.queue_drop_oldest: bool = section.queue_drop_policy == "drop_oldest"
