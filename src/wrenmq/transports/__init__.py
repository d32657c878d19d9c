"""Listeners: each binds one address with one transport (tcp, tls, ws, wss, unix) and hands every
accepted socket to a new connection from the factory the broker gives it (its ``Connection``;
transports import nothing of the broker's). The MQTT code is the same for every transport: TLS
is the event loop's, WebSocket framing is an adapter in front of the connection (``websocket.py``).
"""

from .listener import Listener

__all__ = ["Listener"]
