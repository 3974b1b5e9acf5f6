"""Conference metrics: rooms and participants on this node (no per-room labels)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ConferenceMetrics:
    """Registered on the node's own CollectorRegistry so several nodes can share a process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rooms = Gauge("parley_conference_rooms", "Open rooms on this node", registry=registry)
        self.participants = Gauge(
            "parley_conference_participants", "Participants on this node", registry=registry
        )
        self.rooms_created = Counter(
            "parley_conference_rooms_created", "Rooms created", registry=registry
        )
        self.participants_left = Counter(
            "parley_conference_participants_left",
            "Participants that left, by reason",
            ["reason"],
            registry=registry,
        )
