"""Domain events a Room delivers to the sinks of its participants.

The edge turns each event into a wire message; the conference layer never
formats JSON itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from conference.ids import Identity, ParticipantId, RoomName, TrackId


class TrackKind(StrEnum):
    AUDIO = "audio"
    VIDEO = "video"


class TrackSource(StrEnum):
    CAMERA = "camera"
    MICROPHONE = "microphone"
    SCREEN = "screen"
    SCREEN_AUDIO = "screen_audio"
    UNKNOWN = "unknown"


class LeaveReason(StrEnum):
    """Why a participant left; sent to the room and, for server-side causes, to the participant."""

    CLIENT_LEFT = "client_left"
    DISCONNECTED = "disconnected"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    DUPLICATE_IDENTITY = "duplicate_identity"
    REMOVED = "removed"
    ROOM_CLOSED = "room_closed"
    SERVER_SHUTDOWN = "server_shutdown"
    PROTOCOL_VIOLATION = "protocol_violation"
    NODE_DRAINING = "node_draining"
    """The node hands its rooms over to the cluster: the client is told to reconnect."""
    ROOM_MOVED = "room_moved"
    """The node was cut off long enough for another node to take its room: the client is
    told to reconnect (and finds the room on its new node)."""


RESUMABLE = frozenset({LeaveReason.DISCONNECTED, LeaveReason.HEARTBEAT_TIMEOUT})
"""A participant leaving for one of these (its socket is gone, not closed on purpose) is
held in its room for the resume window before it leaves."""


@dataclass(frozen=True, kw_only=True)
class TrackInfo:
    """A published track as the room sees it."""

    id: TrackId
    participant: ParticipantId
    kind: TrackKind
    source: TrackSource
    name: str = ""
    muted: bool = False
    stalled: bool = False
    """The publisher stopped sending RTP (no packets for ``sfu.stall_timeout``)."""

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "participant": self.participant,
            "kind": self.kind.value,
            "source": self.source.value,
            "name": self.name,
            "muted": self.muted,
            "stalled": self.stalled,
        }


@dataclass(frozen=True, kw_only=True)
class ParticipantInfo:
    """A snapshot of a participant for the wire and the admin API."""

    id: ParticipantId
    identity: Identity
    name: str
    metadata: str
    joined_at: float
    tracks: tuple[TrackInfo, ...]
    grants: dict[str, Any]
    reconnecting: bool = False
    """Its socket dropped; it is held in the room for the resume window."""

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "identity": self.identity,
            "name": self.name,
            "metadata": self.metadata,
            "joined_at": self.joined_at,
            "tracks": [t.to_wire() for t in self.tracks],
            "grants": self.grants,
            "reconnecting": self.reconnecting,
        }


@dataclass(frozen=True, kw_only=True)
class ParticipantJoined:
    room: RoomName
    participant: ParticipantInfo


@dataclass(frozen=True, kw_only=True)
class ParticipantLeft:
    room: RoomName
    participant: ParticipantId
    identity: Identity
    reason: LeaveReason


@dataclass(frozen=True, kw_only=True)
class ParticipantUpdated:
    room: RoomName
    participant: ParticipantInfo


@dataclass(frozen=True, kw_only=True)
class TrackPublished:
    room: RoomName
    track: TrackInfo


@dataclass(frozen=True, kw_only=True)
class TrackUnpublished:
    room: RoomName
    track: TrackInfo


@dataclass(frozen=True, kw_only=True)
class TrackUpdated:
    room: RoomName
    track: TrackInfo


@dataclass(frozen=True, kw_only=True)
class DataReceived:
    room: RoomName
    sender: ParticipantId
    sender_identity: Identity
    payload: Any
    topic: str


@dataclass(frozen=True, kw_only=True)
class Disconnected:
    """Sent to one participant only: the server ended its session."""

    room: RoomName
    reason: LeaveReason
    message: str


@dataclass(frozen=True, kw_only=True)
class SubscriberOffer:
    """Sent to one participant: the SFU's offer for its subscribe connection."""

    room: RoomName
    sdp: str
    tracks: dict[str, dict[str, Any]]
    """mid → {track, participant, kind} for every m-line that carries a track."""


@dataclass(frozen=True, kw_only=True)
class ActiveSpeakers:
    room: RoomName
    speakers: tuple[tuple[ParticipantId, int], ...]
    """(participant, audio level in -dBov), loudest first."""


@dataclass(frozen=True, kw_only=True)
class ConnectionFailed:
    """Sent to one participant: one of its media connections failed and was closed."""

    room: RoomName
    target: str
    """``publisher`` or ``subscriber``."""
    reason: str
    """Why (sfu.transport.Failure): consent_expired, ice_failed, dtls_failed, closed."""


@dataclass(frozen=True, kw_only=True)
class PermissionChanged:
    """Sent to one participant: its grants changed (promoted, demoted)."""

    room: RoomName
    grants: dict[str, Any]
    reason: str
    by: ParticipantId | None


@dataclass(frozen=True, kw_only=True)
class SpeakerRequested:
    """Sent to moderators: a listener asks to speak."""

    room: RoomName
    participant: ParticipantInfo
    message: str
    expires_at: float


@dataclass(frozen=True, kw_only=True)
class SpeakerRequestResolved:
    """Sent to the requester and the moderators."""

    room: RoomName
    participant: ParticipantId
    outcome: str
    """approved | denied | cancelled | timeout"""
    by: ParticipantId | None
    reason: str


@dataclass(frozen=True, kw_only=True)
class StageInvited:
    """Sent to one listener: a moderator (None: the admin API) invites it on stage."""

    room: RoomName
    by: ParticipantId | None
    message: str


@dataclass(frozen=True, kw_only=True)
class StageInviteResolved:
    """Sent to the invitee and the moderators."""

    room: RoomName
    participant: ParticipantId
    outcome: str
    """accepted | declined | timeout"""
    by: ParticipantId | None


@dataclass(frozen=True, kw_only=True)
class TrackMuted:
    """Sent to a track's publisher: a moderator muted (or unmuted) it."""

    room: RoomName
    track: TrackInfo
    by: ParticipantId | None


@dataclass(frozen=True, kw_only=True)
class Removed:
    """Sent to one participant just before its ``disconnect``: a moderator removed it."""

    room: RoomName
    by: ParticipantId | None
    reason: str


@dataclass(frozen=True, kw_only=True)
class ConnectionQualityChanged:
    """Sent to the room: participants whose connection quality changed."""

    room: RoomName
    updates: tuple[tuple[ParticipantId, str], ...]
    """(participant, excellent | good | poor | lost)."""


@dataclass(frozen=True, kw_only=True)
class StreamStateChanged:
    """Sent to one subscriber: what it receives of one video track changed."""

    room: RoomName
    track: TrackId
    state: str
    """active | paused_bandwidth"""
    layer: int | None
    """Temporal layer cap (2 full, 1 half, 0 quarter frame rate), None when paused."""
    encoding: str | None = None
    """The simulcast encoding (its RID) being forwarded; None for a single-encoding track,
    while paused, or before the first key frame."""


RoomEvent = (
    ParticipantJoined
    | ParticipantLeft
    | ParticipantUpdated
    | TrackPublished
    | TrackUnpublished
    | TrackUpdated
    | DataReceived
    | Disconnected
    | SubscriberOffer
    | ActiveSpeakers
    | ConnectionFailed
    | PermissionChanged
    | SpeakerRequested
    | SpeakerRequestResolved
    | StageInvited
    | StageInviteResolved
    | TrackMuted
    | Removed
    | ConnectionQualityChanged
    | StreamStateChanged
)
