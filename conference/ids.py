"""Distinct id types so an identity is never passed where a participant id is expected."""

from __future__ import annotations

import secrets
from typing import NewType

RoomName = NewType("RoomName", str)
"""Chosen by the application (the ``grants.room`` claim)."""

Identity = NewType("Identity", str)
"""Chosen by the application (the ``sub`` claim); unique within a room at any time."""

ParticipantId = NewType("ParticipantId", str)
"""Issued by the node for one session of one identity; changes on every join."""

TrackId = NewType("TrackId", str)
"""Issued by the node when a participant publishes a track."""

NodeId = NewType("NodeId", str)
"""One Parley process."""


def _token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(9)}"


def new_participant_id() -> ParticipantId:
    return ParticipantId(_token("PA"))


def new_track_id() -> TrackId:
    return TrackId(_token("TR"))


def new_node_id() -> NodeId:
    return NodeId(_token("ND"))
