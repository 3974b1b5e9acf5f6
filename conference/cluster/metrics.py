"""Cluster metrics: rooms owned, the node's state, Redis health (labels from fixed sets)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

NODE_STATES = ("serving", "draining")
REDIS_OPS = ("heartbeat", "unregister", "nodes", "claim", "release", "rooms",
             "state_load", "state_write", "bus_publish", "bus_receive")
"""Every label value of ``parley_cluster_redis_errors``: one per kind of call."""


class ClusterMetrics:
    """Registered on the node's own registry, only when the node is clustered."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rooms_owned = Gauge(
            "parley_cluster_rooms_owned", "Rooms this node owns in the cluster",
            registry=registry)
        self.node_state = Gauge(
            "parley_cluster_node_state", "1 for the node's current state, 0 for the others",
            ["state"], registry=registry)
        self.redis_errors = Counter(
            "parley_cluster_redis_errors", "Redis calls that failed (each attempt), by call",
            ["op"], registry=registry)
        self.redis_up = Gauge(
            "parley_cluster_redis_up", "1 while the last Redis call succeeded", registry=registry)
        self.claim_conflicts = Counter(
            "parley_cluster_claim_conflicts",
            "Rooms this node holds that Redis gave to another node (seen on re-registration)",
            registry=registry)
        self.bus_frames = Counter(
            "parley_cluster_bus_frames", "Frames published to and received from the bus",
            ["direction"], registry=registry)
        self.bus_dropped = Counter(
            "parley_cluster_bus_dropped",
            "Frames dropped before reaching Redis (queue full, or Redis unreachable)",
            registry=registry)
        for direction in ("in", "out"):
            self.bus_frames.labels(direction=direction)
        for state in NODE_STATES:
            self.node_state.labels(state=state).set(1 if state == "serving" else 0)
        for op in REDIS_OPS:
            self.redis_errors.labels(op=op)

    def set_state(self, state: str) -> None:
        for name in NODE_STATES:
            self.node_state.labels(state=name).set(1 if name == state else 0)
