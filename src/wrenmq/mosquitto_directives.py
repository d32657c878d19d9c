"""Mosquitto's mosquitto.conf directives, sorted by what wrenmq does with each (``mosquitto_conf``
reads the file with these tables): carried over to a setting, ignored with a warning, or refused
because ignoring it would let in, or show, more than Mosquitto does.
"""

from __future__ import annotations

import re

# Directives that belong to a listener (before any `listener` line: to the default listener).
LISTENER_KEYS = {
    "cafile": "cafile",
    "certfile": "certfile",
    "keyfile": "keyfile",
    "require_certificate": "require_certificate",
    "use_identity_as_username": "use_identity_as_username",
    "ciphers": "ciphers",
    "max_connections": "max_connections",
}
# Security settings: global, or per listener with `per_listener_settings true`.
SECURITY = ("allow_anonymous", "password_file", "acl_file")
# Global directives that map onto one wrenmq key, and how their value is read.
GLOBAL_INTS = {
    "max_inflight_messages": "max_inflight_messages",
    "max_queued_messages": "max_queued_messages",
    "max_queued_bytes": "max_queued_bytes",  # 0: no limit, in both
    "max_packet_size": "max_packet_size",
    "message_size_limit": "max_packet_size",
    "max_keepalive": "max_keepalive",
    "sys_interval": "sys_interval",
    "max_qos": "maximum_qos",
    "max_topic_alias": "topic_alias_maximum",
}
GLOBAL_BOOLS = {"retain_available": "retain_available"}

# Ignored with a warning that says why: wrenmq has no such setting, and ignoring it loosens nothing.
_STORAGE = "wrenmq's storage commits each change as it happens (see durability); there is no snapshot file"
IGNORED = {
    "allow_duplicate_messages": "deprecated in Mosquitto 2; wrenmq has no such switch",
    "auto_id_prefix": "wrenmq's assigned client ids start with 'wrenmq-'",
    "autosave_interval": _STORAGE,
    "autosave_on_changes": _STORAGE,
    "persistence_file": _STORAGE + " (sqlite: <persistence_location>/wrenmq.db)",
    "ciphers_tls1.3": "Python's TLS cannot choose TLS 1.3 cipher suites; its defaults are used",
    "connection_messages": "wrenmq has no switch for its connect and disconnect log lines",
    "dhparamfile": "wrenmq's TLS key exchange is ECDHE, which needs no DH parameters",
    "http_dir": "wrenmq's WebSocket listeners serve no files (the console is on the API port)",
    "log_timestamp": "wrenmq's log lines always start with a UTC timestamp (log_format json: a field)",
    "log_timestamp_format": "wrenmq's log timestamps are always ISO 8601 in UTC",
    "memory_limit": "wrenmq has no overall memory limit; max_queued_messages and max_queued_bytes bound queues",
    "pid_file": "wrenmq writes no pid file (systemd and containers track the process)",
    "retry_interval": "removed in Mosquitto 2; wrenmq, as MQTT says, resends only on reconnect",
    "store_clean_interval": "obsolete in Mosquitto 2",
    "user": "wrenmq does not change user; start it as the user it runs as (the systemd unit and the image do)",
    "websockets_headers_size": "wrenmq's WebSocket listeners size their buffers themselves",
    "websockets_log_level": "a libwebsockets setting; wrenmq's WebSocket listeners are its own",
}
# Directives whose value wrenmq always behaves as: silent with that value, warned about with another.
MATCHING = {
    "allow_zero_length_clientid": ("true", "wrenmq always assigns a client id where MQTT allows an empty one"),
    "check_retain_source": ("false", "wrenmq checks the ACL when a retained message is published, not again"),
    "queue_qos0_messages": ("false", "wrenmq never queues QoS 0 messages for disconnected clients"),
    "set_tcp_nodelay": ("true", "wrenmq always sets TCP_NODELAY"),
    "upgrade_outgoing_qos": ("false", "wrenmq sends at the lower of the published and the granted QoS, as MQTT says"),
}
# Refused: ignoring any of these would let in, or show, more than Mosquitto does.
REFUSED = {
    "auth_plugin": "authentication plugins are not supported (wrenmq's auth hooks are Python)",
    "plugin": "plugins are not supported (wrenmq's auth hooks are Python)",
    "plugin_load": "plugins are not supported (wrenmq's auth hooks are Python)",
    "global_plugin": "plugins are not supported (wrenmq's auth hooks are Python)",
    "bind_interface": "binding to an interface is not supported; use the interface's address with listener",
    "capath": "capath is not supported; put the CA certificates in one file for cafile",
    "crlfile": "certificate revocation lists are not supported",
    "psk_file": "TLS-PSK is not supported",
    "psk_hint": "TLS-PSK is not supported",
    "mount_point": "mount points are not supported",
    "use_subject_as_username": "use_subject_as_username is not supported (use_identity_as_username is)",
    "use_username_as_clientid": "use_username_as_clientid is not supported",
    "clientid_prefixes": "clientid_prefixes is not supported",
    "tls_engine": "TLS engines are not supported",
    "tls_keyform": "TLS engines are not supported",
    "require_certificate_ocsp": "OCSP is not supported",
}
REFUSED_PREFIXES = ("auth_opt_", "plugin_opt_")

# Ignored with a warning that says why: nothing in wrenmq for it to change, and ignoring it lets in
# nothing Mosquitto would keep out.
_INSIDE = "wrenmq's bridges run inside the broker, with no local connection"
BRIDGE_IGNORED = {
    "local_clientid": f"{_INSIDE} or client id of their own",
    "local_username": f"{_INSIDE} to log in with; as in Mosquitto, the ACL does not apply to a bridge",
    "local_password": f"{_INSIDE} to log in with; as in Mosquitto, the ACL does not apply to a bridge",
    "local_cleansession": f"{_INSIDE}; what waits for the remote is kept in storage either way",
    "local_clean_start": f"{_INSIDE}; what waits for the remote is kept in storage either way",
    "idle_timeout": "only start_type lazy uses it, and wrenmq's bridges start at once (automatic)",
    "threshold": "only start_type lazy uses it, and wrenmq's bridges start at once (automatic)",
}
BRIDGE_REFUSED = {
    "bridge_capath": "bridge_capath is not supported; put the CA certificates in one file for bridge_cafile",
    "bridge_identity": "TLS-PSK is not supported",
    "bridge_psk": "TLS-PSK is not supported",
}
BRIDGE_KEYS = {"address", "addresses", "topic", "remote_username", "username", "remote_password", "password"}
BRIDGE_KEYS |= {"remote_clientid", "clientid", "bridge_protocol_version", "bridge_cafile", "restart_timeout"}
BRIDGE_KEYS |= {"start_type", "round_robin", "bridge_tls_version", "bridge_require_ocsp"}
# Bridge settings carried over to the external broker connection: directive -> (its key, how read).
BRIDGE_SETTINGS = {
    "bridge_certfile": ("certfile", "path"),
    "bridge_keyfile": ("keyfile", "path"),
    "bridge_insecure": ("tls_insecure", "bool"),
    "keepalive_interval": ("keepalive", "int"),
    "cleansession": ("clean_start", "bool"),
    "remote_clean_start": ("clean_start", "bool"),
    "try_private": ("bridge_bit", "bool"),
    "bridge_outgoing_retain": ("outgoing_retain", "bool"),
    "notifications": ("notifications", "bool"),
    "notifications_local_only": ("notifications_local_only", "bool"),
    "notification_topic": ("notification_topic", "topic"),
    "bridge_max_packet_size": ("max_packet_size", "int"),
    "bridge_attempt_unsubscribe": ("unsubscribe_out", "bool"),
    "bridge_alpn": ("alpn", "str"),
    "bridge_bind_address": ("bind_address", "str"),
}
BRIDGE_KEYS |= set(BRIDGE_SETTINGS)
BRIDGE_KEYS |= set(BRIDGE_IGNORED) | set(BRIDGE_REFUSED)

OTHER = {"listener", "port", "bind_address", "protocol", "socket_domain", "tls_version", "per_listener_settings"}
OTHER |= {"persistence", "persistence_location", "persistent_client_expiration", "log_type", "log_dest"}
OTHER |= {"log_facility"}
OTHER |= {"include_dir", "connection"}
KNOWN = (set(LISTENER_KEYS) | set(SECURITY) | set(GLOBAL_INTS) | set(GLOBAL_BOOLS) | set(IGNORED) | set(MATCHING)) | (
    set(REFUSED) | BRIDGE_KEYS | OTHER
)

LOG_LEVELS = {"debug": 0, "all": 0, "information": 1, "notice": 1, "warning": 2, "error": 3, "none": 3}
LEVEL_NAMES = ("debug", "info", "warning", "error")
DURATION = {"h": 3600, "d": 86400, "w": 7 * 86400, "m": 30 * 86400, "y": 365 * 86400}
NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
