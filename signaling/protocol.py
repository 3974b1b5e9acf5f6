"""The wire protocol's codec: client messages in, server messages out. No I/O.

Each client message is declared once, as a msgspec ``Message`` struct next to
the handler that serves it (``@MESSAGES.handles(...)`` in signaling/handlers.py,
signaling/stage_handlers.py and signaling/connection.py); this module holds the
table they register in, strict JSON decoding (no ``NaN``, no ``Infinity``),
validation against the struct, and the encoding of server messages. The JSON
Schema of every client message comes from the same declarations
(``MESSAGES.json_schema()``). docs/protocol.md is the prose version.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import msgspec

from conference.events import (
    ActiveSpeakers,
    ConnectionFailed,
    ConnectionQualityChanged,
    DataReceived,
    Disconnected,
    LeaveReason,
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
from signaling.errors import ErrorCode, SignalError, WireCode

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MAX_DEPTH = 32
"""Deepest nesting of arrays and objects accepted in a client message."""

# Field shapes shared by the message declarations.
ShortId = Annotated[str, msgspec.Meta(max_length=64)]
Name = Annotated[str, msgspec.Meta(max_length=256)]
Text = Annotated[str, msgspec.Meta(max_length=1024)]
Metadata = Annotated[str, msgspec.Meta(max_length=65536)]
Sdp = Annotated[str, msgspec.Meta(max_length=60000)]


class Message(msgspec.Struct, kw_only=True, tag_field="type"):
    """A client message: ``type`` (the struct's tag) and an optional ``id`` echoed in
    replies; unknown fields are ignored."""

    id: str | None = None


M = TypeVar("M", bound=Message)
Handler = Callable[[Any, Any], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class MessageSpec:
    tag: str
    struct: type[Message]
    handler: Handler
    edge: bool
    """Served by the connection that holds the socket (``join``, ``ping``), not by the
    participant session."""


class MessageTable:
    """Every client message type: its struct and its handler, registered together."""

    def __init__(self) -> None:
        self._specs: dict[str, MessageSpec] = {}
        self._decoder = msgspec.json.Decoder()

    def handles(self, *structs: type[Message], edge: bool = False) -> Callable[[Handler], Handler]:
        """Register a handler for one or more message structs (each tagged with its type)."""
        def register(handler: Handler) -> Handler:
            for struct in structs:
                tag = struct.__struct_config__.tag
                if not isinstance(tag, str) or tag in self._specs:
                    raise ValueError(f"message {struct.__name__}: missing or duplicate tag")
                self._specs[tag] = MessageSpec(tag=tag, struct=struct, handler=handler,
                                               edge=edge)
            return handler
        return register

    @property
    def types(self) -> frozenset[str]:
        return frozenset(self._specs)

    def spec(self, mtype: str) -> MessageSpec:
        return self._specs[mtype]

    def parse(self, text: str | bytes) -> Message:
        """Decode and validate one client message or raise a coded SignalError."""
        try:
            raw = self._decoder.decode(text)
        except msgspec.DecodeError as exc:
            raise SignalError(ErrorCode.MALFORMED_JSON, f"not valid JSON: {exc}") from exc
        except RecursionError as exc:
            raise SignalError(ErrorCode.INVALID_MESSAGE,
                              f"nested deeper than {MAX_DEPTH} levels") from exc
        if not isinstance(raw, dict):
            raise SignalError(ErrorCode.INVALID_MESSAGE, "a message must be a JSON object")
        msg_id = raw.get("id")
        if msg_id is not None:
            if isinstance(msg_id, bool) or not isinstance(msg_id, str | int):
                raise SignalError(ErrorCode.INVALID_MESSAGE, "id must be a string or an integer")
            raw["id"] = msg_id = str(msg_id)[:64]
        mtype = raw.get("type")
        if not isinstance(mtype, str):
            raise _invalid(msg_id, "type must be a string")
        spec = self._specs.get(mtype)
        if spec is None:
            raise SignalError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {mtype[:64]!r}",
                              msg_id)
        if _too_deep(raw, text):
            raise _invalid(msg_id, f"{mtype}: nested deeper than {MAX_DEPTH} levels")
        try:
            return msgspec.convert(raw, spec.struct, strict=True)
        except msgspec.ValidationError as exc:
            raise _invalid(msg_id, f"{mtype}: {exc}") from exc

    def json_schema(self) -> dict[str, Any]:
        """A JSON Schema (draft 2020-12) of every client message."""
        structs = [self._specs[t].struct for t in sorted(self._specs)]
        (schemas,), components = msgspec.json.schema_components(
            [structs[0] if len(structs) == 1 else _union(structs)],
            ref_template="#/$defs/{name}")
        return {"$schema": "https://json-schema.org/draft/2020-12/schema",
                "title": "Parley client messages", **schemas, "$defs": components}


def _union(structs: list[type[Message]]) -> Any:
    union: Any = structs[0]
    for struct in structs[1:]:
        union = union | struct
    return union


def _too_deep(raw: Any, text: str | bytes) -> bool:
    """Only messages with many brackets are walked (SDP and plain fields are not)."""
    opening = (b"[", b"{") if isinstance(text, bytes) else ("[", "{")
    if text.count(opening[0]) + text.count(opening[1]) <= MAX_DEPTH:  # type: ignore[arg-type]
        return False
    stack: list[tuple[Any, int]] = [(raw, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, dict | list))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, dict | list))
    return False


MESSAGES = MessageTable()
"""The one table of client messages; handler modules register into it at import."""


def _invalid(msg_id: str | None, message: str) -> SignalError:
    return SignalError(ErrorCode.INVALID_MESSAGE, message, msg_id)


def error_message(code: WireCode, message: str, msg_id: str | None = None) -> dict[str, Any]:
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
        case Disconnected(reason=LeaveReason.NODE_DRAINING | LeaveReason.ROOM_MOVED as why,
                          message=message):
            return {"type": "reconnect", "reason": why.value, "message": message}
        case Disconnected(reason=reason, message=message):
            return {"type": "disconnect", "reason": reason.value, "message": message}
        case SubscriberOffer(sdp=sdp, tracks=tracks):
            return {"type": "offer", "target": "subscriber", "sdp": sdp, "tracks": tracks}
        case ActiveSpeakers(speakers=speakers):
            return {"type": "active-speakers",
                    "speakers": [{"participant": p, "level": lvl} for p, lvl in speakers]}
        case ConnectionFailed(target=target, reason=reason):
            return {"type": "connection-failed", "target": target, "reason": reason}
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
        case StreamStateChanged(track=track, state=state, layer=layer, encoding=encoding):
            return {"type": "stream-state", "track": track, "state": state, "layer": layer,
                    "encoding": encoding}
        case Removed(by=by, reason=reason):
            return {"type": "removed", "by": by, "reason": reason}
    raise TypeError(f"unknown event {event!r}")


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """A server message serialised once (for every recipient of a room event); the
    connection's writer appends the recipient's own ``seq``. This is the unit the
    link between a participant session and its socket carries."""

    type: str
    head: str
    """The JSON object without its closing brace."""

    def with_seq(self, seq: int) -> str:
        return f'{self.head},"seq":{seq}}}'


_encoder = msgspec.json.Encoder()


def encode(message: dict[str, Any]) -> EncodedEvent:
    """Serialise a server message (strict JSON: a non-finite number becomes null).

    A client may send a lone UTF-16 surrogate as a ``\\ud800`` escape; such text has
    no UTF-8 form, so it goes back out escaped the same way."""
    try:
        text = _encoder.encode(message)[:-1].decode()
    except UnicodeEncodeError:
        text = json.dumps(message, separators=(",", ":"))[:-1]
    return EncodedEvent(type=message["type"], head=text)


def reply(msg_id: str | None, message: dict[str, Any]) -> EncodedEvent:
    """A reply to a client message, carrying its ``id``."""
    if msg_id is not None:
        message["id"] = msg_id
    return encode(message)


def encode_error(code: WireCode, message: str, msg_id: str | None = None) -> EncodedEvent:
    return encode(error_message(code, message, msg_id))


_last_encoded: tuple[RoomEvent, EncodedEvent] | None = None


def encode_event(event: RoomEvent) -> EncodedEvent:
    """Serialise an event once: a room delivers the same event object to each of its
    participants in turn, so the previous result is reused for the same object."""
    global _last_encoded
    if _last_encoded is not None and _last_encoded[0] is event:
        return _last_encoded[1]
    encoded = encode(event_message(event))
    _last_encoded = (event, encoded)
    return encoded
