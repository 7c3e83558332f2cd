"""Free capacity bookkeeping for one cycle: which pod fits where, found fast by buckets."""

from scheduler.fit.classes import NodeClass, node_classes
from scheduler.fit.state import ClusterState

__all__ = ["ClusterState", "NodeClass", "node_classes"]
