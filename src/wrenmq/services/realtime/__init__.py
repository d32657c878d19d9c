"""Realtime for applications that cannot always speak MQTT: the shared parts of the Socket.IO
bridge (``api.socketio_bridge``) and HTTP long polling (``api.routes_realtime``). One module per
concept: ``service`` (the service, its checks and hook events), ``signin`` (who a client is),
``readers`` and ``inbox`` (what each reader is sent), ``resume`` (what it gets first),
``presence`` (who is present), ``formats`` (the JSON sent), ``errors`` (``Denied``).

* **Who.** A realtime client signs in with an API key (its name is the username) or with a user
  name and password checked by the same authentication hooks as an MQTT CONNECT; without either it
  is anonymous, allowed where the broker allows anonymous MQTT clients. Its filters and topics are
  checked by the same ACL hooks as an MQTT client's, as ``READ`` and ``WRITE``.
* **The journal.** Every message the broker routes is kept for a while, bounded by count, bytes
  and age (``realtime_journal_*``), under the broker's number for it (``Broker.number``) and the
  time it was routed (``Message.routed_at``, which every realtime delivery of it carries). A
  client that opens a realtime connection with ``since`` (a server timestamp) first gets what it
  missed from there: a browser that falls back from MQTT to Socket.IO, or from Socket.IO to
  polling, loses nothing between the two. Each message carries ``Broker.message_id`` on every
  transport (``message_id`` here, the user property ``wrenmq-message-id`` over MQTT for clients
  that ask for it), so the browser client drops what it then sees twice, by identity
  (``wrenmq-realtime.js``).
* **Inboxes.** What a Socket.IO client or a poll session is sent goes through an :class:`Inbox`: a
  bounded buffer that drops the oldest when its reader is too slow and says how many it dropped.
* **Presence.** Application users announce themselves with a presence id; each of their live
  connections (a Socket.IO socket, a poll session, an MQTT connection that published its own
  online presence) is an attachment. The first attachment publishes a retained
  ``<realtime_presence_prefix>/<id>`` ``{"status": "online"}``, the last one to go the offline
  one. An offline message (an MQTT will) for a user still attached by another transport is
  dropped: a browser that moved from MQTT to Socket.IO stays online.

Messages reach the journal from ``Broker.route`` itself (``Broker.journal``, compiled: a Python
call per message would cost as much again as routing it), after every publish hook; they reach
readers as in-process subscriptions in the broker's router (``Broker.subscribe_local``), matched
with MQTT clients' by the one trie match per message, so readers cost nothing for messages they do
not want. ``on_publish`` runs for presence topics only; no other hook event runs per message.
"""

from .errors import Denied
from .formats import message_json
from .inbox import Delivery, Inbox  # first: api.trace and api.streams import it while this loads
from .presence import PresenceBoard
from .readers import Subscriber
from .service import MAX_FILTERS, RealtimeService
from .signin import RealtimeClient, sign_in_user

__all__ = [
    "MAX_FILTERS",
    "Delivery",
    "Denied",
    "Inbox",
    "PresenceBoard",
    "RealtimeClient",
    "RealtimeService",
    "Subscriber",
    "message_json",
    "sign_in_user",
]
