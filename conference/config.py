"""The conference section of the node's configuration."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# The SFU's sections reach the edge's configuration through this layer.
from sfu.bandwidth import BandwidthConfig
from sfu.config import SfuConfig

__all__ = ["BandwidthConfig", "RoomConfig", "RoomOptions", "SfuConfig", "StagePolicy"]


class StagePolicy(StrEnum):
    MODERATED = "moderated"
    """A moderator approves each request to speak."""
    AUTO = "auto"
    """Requests to speak are approved at once (within the speaker cap)."""


@dataclass(frozen=True, kw_only=True)
class RoomOptions:
    """Per-room stage settings; start from the node's RoomConfig, changeable by the admin API."""

    max_speakers: int = 0
    """Participants allowed to publish at once (0: no cap)."""
    stage_policy: StagePolicy = StagePolicy.MODERATED
    speaker_request_timeout: float = 60.0
    """A request to speak that no moderator answers is closed after this many seconds."""
    moderator_can_unmute: bool = False
    """Whether a moderator may unmute a track (by default only its publisher can)."""


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
    max_speakers: int = 0
    """Default for new rooms: participants allowed to publish at once (0: no cap)."""
    stage_policy: str = "moderated"
    """Default for new rooms: ``moderated`` (a moderator approves) or ``auto``."""
    speaker_request_timeout: float = 60.0
    """Default for new rooms: seconds a request to speak waits for a moderator."""
    moderator_can_unmute: bool = False
    """Default for new rooms: may a moderator unmute a participant's track."""

    def options(self) -> RoomOptions:
        return RoomOptions(max_speakers=self.max_speakers,
                           stage_policy=StagePolicy(self.stage_policy),
                           speaker_request_timeout=self.speaker_request_timeout,
                           moderator_can_unmute=self.moderator_can_unmute)
