"""Wire error codes and close codes: the only place domain errors become protocol errors.

The edge has its own codes (authentication, framing, protocol); the codes of
conference and SFU errors go on the wire as they are (``WireCode``), so no
code is written twice. Every code is documented in docs/protocol.md.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

from conference.errors import ConferenceCode, SfuCode


class ErrorCode(StrEnum):
    """The edge's own codes of ``{"type": "error"}`` messages."""

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
    INTERNAL_ERROR = "internal_error"
    # HTTP (admin API and the socket's upgrade)
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    UNKNOWN_ROOM = "unknown_room"


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
    RECONNECT = 4010
    """The client should reconnect at once, resuming, normally through the load balancer to
    another node: the room's node was lost or is draining; a ``reconnect`` message says why."""


WireCode = ErrorCode | ConferenceCode | SfuCode
"""Every code an ``error`` message (or an admin API error) can carry."""

class SignalError(Exception):
    """A refused client message; becomes one ``error`` message on the wire."""

    def __init__(self, code: ErrorCode, message: str, msg_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.msg_id = msg_id
        """The ``id`` of the client message this error answers, if known."""
