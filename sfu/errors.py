"""Coded errors of the SFU."""

from __future__ import annotations

from enum import StrEnum


class SfuCode(StrEnum):
    INVALID_SDP = "invalid_sdp"
    NO_SUPPORTED_CODEC = "no_supported_codec"
    TOO_MANY_TRACKS = "too_many_tracks"
    NO_OFFER_PENDING = "no_offer_pending"
    UNKNOWN_CONNECTION = "unknown_connection"
    INVALID_CANDIDATE = "invalid_candidate"
    PERMISSION_DENIED = "permission_denied"
    CLOSED = "connection_closed"


class SfuError(Exception):
    def __init__(self, code: SfuCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
