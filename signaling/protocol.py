"""The wire protocol: parsing and validating client messages, formatting server messages.

Encoding and decoding only, no I/O (docs/protocol.md is the prose version).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from conference.events import (
    ActiveSpeakers,
    ConnectionFailed,
    ConnectionQualityChanged,
    DataReceived,
    Disconnected,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    PermissionChanged,
    Removed,
    RoomEvent,
    SpeakerRequested,
    SpeakerRequestResolved,
    StageInvited,
    StageInviteResolved,
    StreamStateChanged,
    SubscriberOffer,
    TrackMuted,
    TrackPublished,
    TrackUnpublished,
    TrackUpdated,
)
from signaling.errors import ErrorCode, SignalError

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)

_STR, _INT, _BOOL, _ANY, _LIST, _NUM = "string", "integer", "boolean", "any", "list", "number"


@dataclass(frozen=True)
class Field:
    kind: str
    required: bool = False
    max_len: int = 0


# Every client message type and its fields (``type`` and ``id`` are common to all).
SCHEMAS: dict[str, dict[str, Field]] = {
    "join": {
        "token": Field(_STR, max_len=8192),
        "version": Field(_INT),
        "room": Field(_STR, max_len=256),
        "media": Field(_BOOL),
    },
    "offer": {
        "sdp": Field(_STR, required=True, max_len=60000),
        "tracks": Field(_LIST),
    },
    "answer": {"sdp": Field(_STR, required=True, max_len=60000)},
    "candidate": {
        "target": Field(_STR, required=True, max_len=16),
        "candidate": Field(_ANY),
    },
    "request-to-speak": {"message": Field(_STR, max_len=1024)},
    "cancel-speaker-request": {},
    "approve-speaker": {"participant": Field(_STR, required=True, max_len=64),
                        "reason": Field(_STR, max_len=1024)},
    "deny-speaker": {"participant": Field(_STR, required=True, max_len=64),
                     "reason": Field(_STR, max_len=1024)},
    "invite-to-stage": {"participant": Field(_STR, required=True, max_len=64),
                        "message": Field(_STR, max_len=1024)},
    "respond-to-invite": {"accept": Field(_BOOL, required=True)},
    "move-to-audience": {"participant": Field(_STR, required=True, max_len=64),
                         "reason": Field(_STR, max_len=1024)},
    "remove-participant": {"participant": Field(_STR, required=True, max_len=64),
                           "reason": Field(_STR, max_len=1024)},
    "update-participant": {"participant": Field(_STR, required=True, max_len=64),
                           "name": Field(_STR, max_len=256),
                           "metadata": Field(_STR, max_len=65536)},
    "subscription": {
        "track": Field(_STR, required=True, max_len=64),
        "state": Field(_STR, required=True, max_len=16),
    },
    "leave": {},
    "ping": {},
    "update": {"name": Field(_STR, max_len=256), "metadata": Field(_STR, max_len=65536)},
    "remove-track": {"track": Field(_STR, required=True, max_len=64)},
    "mute-track": {"track": Field(_STR, required=True, max_len=64),
                   "muted": Field(_BOOL, required=True)},
    "data": {
        "payload": Field(_ANY, required=True),
        "topic": Field(_STR, max_len=128),
        "to": Field(_LIST),
    },
}

KNOWN_TYPES = frozenset(SCHEMAS)


@dataclass(frozen=True, kw_only=True)
class ClientMessage:
    type: str
    id: str | None
    body: dict[str, Any]


def _check(kind: str, value: Any) -> bool:
    if kind == _STR:
        return isinstance(value, str)
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _NUM:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _LIST:
        return isinstance(value, list)
    return True


def parse_message(text: str) -> ClientMessage:
    """Decode and validate one client message or raise a coded SignalError."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise SignalError(ErrorCode.MALFORMED_JSON, f"not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise SignalError(ErrorCode.INVALID_MESSAGE, "a message must be a JSON object")
    msg_id = raw.get("id")
    if msg_id is not None and not (isinstance(msg_id, str | int) and not isinstance(msg_id, bool)):
        raise SignalError(ErrorCode.INVALID_MESSAGE, "id must be a string or an integer")
    msg_id = None if msg_id is None else str(msg_id)[:64]
    mtype = raw.get("type")
    if not isinstance(mtype, str):
        raise _invalid(msg_id, "type must be a string")
    schema = SCHEMAS.get(mtype)
    if schema is None:
        raise SignalError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {mtype[:64]!r}", msg_id)
    body: dict[str, Any] = {}
    for name, spec in schema.items():
        if name not in raw or raw[name] is None:
            if spec.required:
                raise _invalid(msg_id, f"{mtype}: field {name!r} is required")
            continue
        value = raw[name]
        if not _check(spec.kind, value):
            raise _invalid(msg_id, f"{mtype}: field {name!r} must be a {spec.kind}")
        if spec.max_len and isinstance(value, str) and len(value) > spec.max_len:
            raise _invalid(msg_id, f"{mtype}: field {name!r} longer than {spec.max_len}")
        body[name] = value
    return ClientMessage(type=mtype, id=msg_id, body=body)


def _invalid(msg_id: str | None, message: str) -> SignalError:
    return SignalError(ErrorCode.INVALID_MESSAGE, message, msg_id)


def error_message(code: ErrorCode, message: str, msg_id: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "error", "code": code.value, "message": message}
    if msg_id is not None:
        out["id"] = msg_id
    return out


def event_message(event: RoomEvent) -> dict[str, Any]:
    """A room event as the server message that announces it."""
    match event:
        case ParticipantJoined(participant=p):
            return {"type": "participant-joined", "participant": p.to_wire()}
        case ParticipantLeft(participant=pid, identity=identity, reason=reason):
            return {"type": "participant-left", "participant": pid, "identity": identity,
                    "reason": reason.value}
        case ParticipantUpdated(participant=p):
            return {"type": "participant-updated", "participant": p.to_wire()}
        case TrackPublished(track=t):
            return {"type": "track-published", "track": t.to_wire()}
        case TrackUnpublished(track=t):
            return {"type": "track-unpublished", "track": t.to_wire()}
        case TrackUpdated(track=t):
            return {"type": "track-updated", "track": t.to_wire()}
        case DataReceived(sender=sender, sender_identity=identity, payload=payload, topic=topic):
            return {"type": "data", "from": sender, "identity": identity, "topic": topic,
                    "payload": payload}
        case Disconnected(reason=reason, message=message):
            return {"type": "disconnect", "reason": reason.value, "message": message}
        case SubscriberOffer(sdp=sdp, tracks=tracks):
            return {"type": "offer", "target": "subscriber", "sdp": sdp, "tracks": tracks}
        case ActiveSpeakers(speakers=speakers):
            return {"type": "active-speakers",
                    "speakers": [{"participant": p, "level": lvl} for p, lvl in speakers]}
        case ConnectionFailed(target=target):
            return {"type": "connection-failed", "target": target}
        case PermissionChanged(grants=grants, reason=reason, by=by):
            return {"type": "permission-changed", "grants": grants, "reason": reason, "by": by}
        case SpeakerRequested(participant=p, message=message, expires_at=expires_at):
            return {"type": "speaker-request", "participant": p.to_wire(), "message": message,
                    "expires_at": expires_at}
        case SpeakerRequestResolved(participant=pid, outcome=outcome, by=by, reason=reason):
            return {"type": "speaker-request-result", "participant": pid, "outcome": outcome,
                    "by": by, "reason": reason}
        case StageInvited(by=by, message=message):
            return {"type": "stage-invite", "by": by, "message": message}
        case StageInviteResolved(participant=pid, outcome=outcome, by=by):
            return {"type": "stage-invite-result", "participant": pid, "outcome": outcome,
                    "by": by}
        case TrackMuted(track=t, by=by):
            return {"type": "track-muted", "track": t.to_wire(), "by": by}
        case ConnectionQualityChanged(updates=updates):
            return {"type": "connection-quality",
                    "updates": [{"participant": p, "quality": q} for p, q in updates]}
        case StreamStateChanged(track=track, state=state, layer=layer):
            return {"type": "stream-state", "track": track, "state": state, "layer": layer}
        case Removed(by=by, reason=reason):
            return {"type": "removed", "by": by, "reason": reason}
    raise TypeError(f"unknown event {event!r}")


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """A room event already serialised once for every recipient; the writer appends
    the recipient's own ``seq``."""

    type: str
    head: str
    """The JSON object without its closing brace."""

    def with_seq(self, seq: int) -> str:
        return f'{self.head},"seq":{seq}}}'


_last_encoded: tuple[RoomEvent, EncodedEvent] | None = None


def encode_event(event: RoomEvent) -> EncodedEvent:
    """Serialise an event once: a room delivers the same event object to each of its
    participants in turn, so the previous result is reused for the same object."""
    global _last_encoded
    if _last_encoded is not None and _last_encoded[0] is event:
        return _last_encoded[1]
    message = event_message(event)
    encoded = EncodedEvent(type=message["type"],
                           head=json.dumps(message, separators=(",", ":"))[:-1])
    _last_encoded = (event, encoded)
    return encoded
