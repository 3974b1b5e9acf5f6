"""Wire error codes and close codes: the only place domain errors become protocol errors."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    """Codes of ``{"type": "error"}`` messages; documented in docs/protocol.md."""

    # authentication (join)
    MISSING_TOKEN = "missing_token"
    INVALID_TOKEN = "invalid_token"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    INVALID_ALGORITHM = "invalid_algorithm"
    INVALID_GRANTS = "invalid_grants"
    WRONG_ROOM = "wrong_room"
    JOIN_NOT_ALLOWED = "join_not_allowed"
    # protocol
    MALFORMED_JSON = "malformed_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    UNSUPPORTED_VERSION = "unsupported_version"
    MESSAGE_TOO_LARGE = "message_too_large"
    BINARY_NOT_SUPPORTED = "binary_not_supported"
    RATE_LIMITED = "rate_limited"
    NOT_JOINED = "not_joined"
    ALREADY_JOINED = "already_joined"
    JOIN_TIMEOUT = "join_timeout"
    # conference
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
    # media (SFU)
    INVALID_SDP = "invalid_sdp"
    NO_SUPPORTED_CODEC = "no_supported_codec"
    NO_OFFER_PENDING = "no_offer_pending"
    UNKNOWN_CONNECTION = "unknown_connection"
    INVALID_CANDIDATE = "invalid_candidate"
    CONNECTION_CLOSED = "connection_closed"
    INTERNAL_ERROR = "internal_error"


class CloseCode(IntEnum):
    """WebSocket close codes the node uses (4000-4999 are application codes)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    AUTH_FAILED = 4001
    JOIN_TIMEOUT = 4002
    RATE_LIMITED = 4003
    HEARTBEAT_TIMEOUT = 4004
    REPLACED = 4005
    REMOVED = 4006
    ROOM_CLOSED = 4007
    SLOW_CONSUMER = 4008
    JOIN_REFUSED = 4009


class SignalError(Exception):
    """A refused client message; becomes one ``error`` message on the wire."""

    def __init__(self, code: ErrorCode, message: str, msg_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.msg_id = msg_id
        """The ``id`` of the client message this error answers, if known."""
