"""The conference section of the node's configuration."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class RoomConfig:
    """Room limits; loaded once at start-up and handed to the RoomManager."""

    empty_timeout: float = 300.0
    """Seconds an empty room lives before it is closed."""
    max_participants: int = 100
    """Participants per room, hidden ones included; the next join gets ``room_full``."""
    max_tracks_per_participant: int = 4
    """Tracks one participant may publish at once."""
    max_metadata_bytes: int = 4096
    """Largest participant metadata string accepted."""
