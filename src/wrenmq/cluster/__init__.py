"""wrenmq across processes and nodes, on Redis (``cluster_url``): see ``node.Cluster``.

Each node keeps its own trie and storage; Redis holds the cluster's route table (replicated on
every node), one inbox stream per node for the messages other nodes forward to it, the retained
messages, the wills of each node's clients and who holds each client id. Without ``cluster_url``
none of this is imported and wrenmq is the single node it always was.
"""

from .node import HEARTBEAT, HEARTBEAT_TTL, Cluster, ClusterError, default_node_name

__all__ = ["HEARTBEAT", "HEARTBEAT_TTL", "Cluster", "ClusterError", "default_node_name"]
