"""The settings the per-packet path reads, copied once out of the pydantic ``Config``.

``Config`` is a pydantic model: reading one of its attributes is a generic ``getattr`` through
the model's class (hundreds of instructions). ``Limits`` is compiled with the hot path, so the
same read is a struct load. Connections and sessions read ``broker.limits``; everything that runs
once (start-up, listeners, storage) keeps reading ``broker.config``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..mqtt.server import ServerSettings

if TYPE_CHECKING:
    from ..config import Config


class Limits(ServerSettings):
    """The broker's limits; the part every MQTT connection's protocol reads is ``ServerSettings``."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.max_packet_size: int = config.max_packet_size
        self.receive_maximum: int = config.receive_maximum
        self.max_inflight_messages: int = config.max_inflight_messages
        self.max_queued_messages: int = config.max_queued_messages
        self.max_queued_bytes: int = config.max_queued_bytes
        self.slow_consumer_timeout: float = config.slow_consumer_timeout
        self.queue_drop_oldest: bool = config.queue_drop_policy == "drop_oldest"
        self.max_session_expiry_interval: int = config.max_session_expiry_interval
        self.connect_timeout: float = config.connect_timeout
        self.packet_read_timeout: float = config.packet_read_timeout
        self.max_keepalive: int = config.max_keepalive
        self.max_connections: int = config.max_connections
        self.max_topic_length: int = config.max_topic_length
        self.max_topic_levels: int = config.max_topic_levels
        self.max_subscriptions: int = config.max_subscriptions
        self.max_publish_rate: float = config.max_publish_rate
        self.retain_available: bool = config.retain_available
        self.maximum_qos: int = config.maximum_qos
        self.topic_alias_maximum: int = config.topic_alias_maximum
        self.topic_alias_out_maximum: int = config.topic_alias_out_maximum
        self.max_write_buffer: int = config.max_write_buffer
        self.write_buffer_high: int = config.write_buffer_high
        self.write_buffer_low: int = config.write_buffer_low
