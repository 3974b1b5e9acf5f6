"""Coded errors of the conference layer. Only the edge maps them to wire codes.

The SFU's coded errors pass through this layer unchanged: they are re-exported
here so the edge, which never imports the SFU, can name them.
"""

from __future__ import annotations

from enum import StrEnum

from sfu.errors import SfuCode, SfuError

__all__ = ["ConferenceCode", "ConferenceError", "SfuCode", "SfuError"]


class ConferenceCode(StrEnum):
    ROOM_FULL = "room_full"
    ROOM_CLOSED = "room_closed"
    NOT_IN_ROOM = "not_in_room"
    PERMISSION_DENIED = "permission_denied"
    TOO_MANY_TRACKS = "too_many_tracks"
    UNKNOWN_TRACK = "unknown_track"
    UNKNOWN_PARTICIPANT = "unknown_participant"
    NODE_DRAINING = "node_draining"
    MEDIA_DISABLED = "media_disabled"
    STAGE_FULL = "stage_full"
    NO_PENDING_REQUEST = "no_pending_request"
    ALREADY_REQUESTED = "already_requested"
    ALREADY_SPEAKER = "already_speaker"
    NOT_A_SPEAKER = "not_a_speaker"
    BANNED = "removed_from_room"
    METADATA_TOO_LARGE = "metadata_too_large"
    CLUSTER_UNAVAILABLE = "cluster_unavailable"
    """The cluster's shared state (Redis) cannot be reached; retry the join later."""
    ROOM_ON_OTHER_NODE = "room_on_other_node"
    """The room lives on another node of the cluster and this node cannot relay to it."""


class ConferenceError(Exception):
    """A refused conference operation; ``code`` is stable and documented."""

    def __init__(self, code: ConferenceCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
