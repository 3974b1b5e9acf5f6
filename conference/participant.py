"""One session of one identity in one room."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from conference.events import DataReceived, ParticipantInfo, RoomEvent, TrackInfo
from conference.ids import Identity, ParticipantId, TrackId
from conference.permissions import Grants
from conference.ratelimit import TokenBucket

EventSink = Callable[[RoomEvent], None]
"""Where a participant's events go. Must not block: the edge posts to its session loop."""

DataRoute = Callable[[DataReceived], bool]
"""A faster path for app data (the data channel); returns False when it cannot carry it."""


@dataclass(kw_only=True)
class Participant:
    """Owned by its Room; the edge keeps a reference to call the room with."""

    id: ParticipantId
    identity: Identity
    name: str
    metadata: str
    grants: Grants
    sink: EventSink
    joined_at: float = field(default_factory=time.time)
    token_id: str = ""
    token_expires: float = 0.0
    tracks: dict[TrackId, TrackInfo] = field(default_factory=dict)
    data_budget: TokenBucket | None = None
    """App data this participant may send, over the socket and the data channel together;
    ``None``: no limit."""
    reconnecting: bool = False
    """Its socket dropped without ``leave``: held in the room, without media, until it
    resumes or the resume window ends."""
    subscriptions: dict[TrackId, str] = field(default_factory=dict)
    """Tracks it paused or unsubscribed (``paused`` | ``unsubscribed``); the rest it
    receives. Kept across a resume."""
    _data_route: DataRoute | None = field(default=None, repr=False)

    @property
    def hidden(self) -> bool:
        return self.grants.hidden

    def info(self) -> ParticipantInfo:
        return ParticipantInfo(
            id=self.id,
            identity=self.identity,
            name=self.name,
            metadata=self.metadata,
            joined_at=self.joined_at,
            tracks=tuple(self.tracks.values()),
            grants=self.grants.to_wire(),
            reconnecting=self.reconnecting,
        )

    def set_data_route(self, route: DataRoute | None) -> None:
        """Send app data this way when it can (the media layer's data channel)."""
        self._data_route = route

    def deliver(self, event: RoomEvent) -> None:
        if (self._data_route is not None and isinstance(event, DataReceived)
                and self._data_route(event)):
            return
        self.sink(event)
