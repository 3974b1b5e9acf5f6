"""Fuzz targets for the signalling edge: client messages, SDP and join tokens.

A target takes the fuzzer's bytes and feeds them to one parser. The documented
refusal (a coded ``SignalError`` or ``SfuError``) is the expected way out; any other
exception, or a broken invariant (``AssertionError``), is a bug. Targets are plain
functions: atheris drives them (fuzz/run.py) and tests replay the inputs it found
(tests/fuzz/test_regressions.py).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpSender
from aiortc.sdp import SessionDescription

import signaling.connection  # noqa: F401  (registers every client message)
from fuzz import media_targets
from fuzz.seeds import JWT_KEY, JWT_SECRET, b64url, sign_jwt
from sfu.errors import SfuError
from sfu.sdp import FORWARDED, MediaSection, read_description
from signaling.auth import TokenVerifier
from signaling.config import AuthConfig
from signaling.errors import ErrorCode, SignalError
from signaling.protocol import MESSAGES
from signaling.session import message_type

Target = Callable[[bytes], None]

CLIENT_TYPES = frozenset({
    "join", "leave", "ping", "update", "offer", "answer", "candidate", "subscription",
    "mute-track", "remove-track", "data", "request-to-speak", "cancel-speaker-request",
    "approve-speaker", "deny-speaker", "invite-to-stage", "respond-to-invite",
    "move-to-audience", "remove-participant", "update-participant",
})
"""The client messages of docs/protocol.md."""


def text_of(data: bytes) -> str:
    """What a WebSocket text frame can carry: valid UTF-8, so never a lone surrogate."""
    return data.decode("utf-8", "replace")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_refusal(err: SignalError) -> None:
    assert err.code in set(ErrorCode), err.code  # the edge's own codes only
    assert err.code is not ErrorCode.INTERNAL_ERROR, "bad input must get a precise code"
    assert err.msg_id is None or (isinstance(err.msg_id, str) and len(err.msg_id) <= 64)


def message(data: bytes) -> None:
    """The message table's parse on one text frame: refused with a code, or a known message
    whose text is strict JSON (the node relays client values, and NaN is not JSON)."""
    text = text_of(data)
    try:
        msg = MESSAGES.parse(text)
    except SignalError as err:
        _check_refusal(err)
        return
    assert message_type(msg) in CLIENT_TYPES, message_type(msg)
    assert msg.id is None or (isinstance(msg.id, str) and len(msg.id) <= 64), msg.id
    try:
        json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise AssertionError(f"accepted a message that is not strict JSON: {exc}") from exc


def _facts(sections: list[MediaSection]) -> list[tuple[str, str | None, str]]:
    return [(s.kind, s.mid, s.direction) for s in sections]


def _aiortc_view(sdp: str) -> SessionDescription | None:
    """How aiortc, which applies the filtered offer, reads it (None: it refuses it)."""
    try:
        return SessionDescription.parse(sdp)
    except Exception:  # any refusal here becomes invalid_sdp in the transport
        return None


_OTHER_BREAKS = re.compile("\r(?!\n)|[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
"""Characters ``str.splitlines`` (aiortc) breaks lines at, and a split on "\\n" does not."""


def sdp(data: bytes) -> None:
    """``read_description`` on a client SDP: what the SFU counts and filters must be what
    aiortc then applies (the text it returns is what the transport hands to aiortc)."""
    text = text_of(data)
    note = " (line breaks other than CRLF and LF)" if _OTHER_BREAKS.search(text) else ""
    try:
        described = read_description(text, max_sections=_MAX_SECTIONS)
    except SfuError:
        return
    sections, filtered = list(described.sections), described.sdp
    again = read_description(filtered, max_sections=_MAX_SECTIONS)
    assert _facts(list(again.sections)) == _facts(sections), "filtering changed the m-lines"
    assert again.sdp == filtered, "filtering is not idempotent"
    parsed = _aiortc_view(filtered)
    if parsed is None:
        return
    kinds = [m.kind for m in parsed.media]
    assert kinds == [s.kind for s in sections], \
        f"the SFU counted m-lines {[s.kind for s in sections]}, aiortc applies {kinds}{note}"
    for media in parsed.media:
        # A section the client does not send in carries nothing through the SFU (its
        # codecs are kept whole when none is forwarded); one it sends in must be clean.
        if media.kind in FORWARDED and media.port != 0 and \
                media.direction in ("sendonly", "sendrecv"):
            names = {c.mimeType.split("/")[-1].lower() for c in media.rtp.codecs}
            extra = names & _NEGOTIABLE[media.kind] - {*FORWARDED[media.kind], "rtx"}
            assert not extra, \
                f"codecs {sorted(extra)} survive filtering in a {media.kind} m-line{note}"


_MAX_SECTIONS = 12
"""The default ``sfu.max_media_sections``."""

_NEGOTIABLE = {kind: {c.mimeType.split("/")[-1].lower()
                      for c in RTCRtpSender.getCapabilities(kind).codecs}
               for kind in FORWARDED}
"""Codecs aiortc would agree to receive, by kind; unknown names it ignores."""

_VERIFIER = TokenVerifier(AuthConfig(keys={JWT_KEY: JWT_SECRET}))


def _token_text(data: bytes) -> str:
    """A JSON string may carry a lone surrogate (as an escape): let the bytes encode one."""
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return text_of(data)


def token_of(data: bytes) -> str:
    """Byte 0 bit 0 clear: the rest is the token text. Set: the rest is header, claims
    and signature separated by newlines; bit 1 signs header and claims with the key."""
    if not data or not data[0] & 1:
        return _token_text(data[1:])
    header, _, rest = data[1:].partition(b"\n")
    claims, _, signature = rest.partition(b"\n")
    if data[0] & 2:
        return sign_jwt(header, claims)
    return f"{b64url(header)}.{b64url(claims)}.{_token_text(signature)}"


def jwt(data: bytes) -> None:
    """``TokenVerifier.verify``: a coded refusal, or claims the node can use."""
    try:
        claims = _VERIFIER.verify(token_of(data))
    except SignalError as err:
        _check_refusal(err)
        return
    assert isinstance(claims.identity, str) and 0 < len(claims.identity) <= 256
    assert isinstance(claims.name, str) and len(claims.name) <= 256
    assert isinstance(claims.metadata, str)
    assert math.isfinite(claims.expires_at), claims.expires_at
    assert isinstance(claims.grants.room, str) and claims.grants.room


TARGETS: dict[str, Target] = {
    "message": message,
    "sdp": sdp,
    "jwt": jwt,
    **media_targets.TARGETS,
}
"""Every fuzz target by name."""
