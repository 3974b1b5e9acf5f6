"""Resume tokens: what lets a client that lost its socket take its participant back.

A token names a room, a participant id and its identity, and when it stops
being valid. It is signed with an HMAC of the API key that signed the
participant's join token (``auth.keys``), under a label of its own so it can
never pass for a join token; any node configured with the same keys verifies
it, so a client may resume on another node of the cluster. The text is
``base64url(JSON).base64url(HMAC-SHA256)`` and is opaque to clients.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

from conference.ids import Identity, ParticipantId, RoomName

_LABEL = b"parley-resume-v1"


@dataclass(frozen=True, kw_only=True)
class ResumeClaim:
    """A verified resume token."""

    key: str
    """The API key (``iss``) that signed the join token, and so this token."""
    room: RoomName
    participant: ParticipantId
    identity: Identity
    expires_at: float
    """Wall-clock time."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ResumeTokens:
    """Mints and verifies resume tokens with the node's API keys."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._secrets = {key: hmac.new(secret.encode(), _LABEL, hashlib.sha256).digest()
                         for key, secret in keys.items()}

    def mint(self, *, key: str, room: RoomName, participant: ParticipantId,
             identity: Identity, expires_at: float) -> str:
        body = _b64(json.dumps({"iss": key, "room": room, "pid": participant,
                                "sub": identity, "exp": round(expires_at, 3)},
                               separators=(",", ":")).encode())
        return f"{body}.{self._sign(key, body)}"

    def _sign(self, key: str, body: str) -> str:
        return _b64(hmac.new(self._secrets[key], body.encode(), hashlib.sha256).digest())

    def verify(self, token: str, *, now: float | None = None) -> ResumeClaim | None:
        """The claim, or ``None`` when the token is malformed, signed with no known key,
        forged or expired (a refused resume joins as new: it is never an error)."""
        body, _, signature = token.partition(".")
        try:
            claims = json.loads(_unb64(body))
            key = claims["iss"]
            if key not in self._secrets or not hmac.compare_digest(
                    signature, self._sign(key, body)):
                return None
            claim = ResumeClaim(key=str(key), room=RoomName(str(claims["room"])),
                                participant=ParticipantId(str(claims["pid"])),
                                identity=Identity(str(claims["sub"])),
                                expires_at=float(claims["exp"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        if claim.expires_at <= (time.time() if now is None else now):
            return None
        return claim
