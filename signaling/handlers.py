"""Participant messages: each declared once (its struct) beside the handler that serves it.

Handlers run in the participant session (where the room lives) and answer
through it; stage and moderation messages are in signaling/stage_handlers.py,
``join`` and ``ping`` at the edge (signaling/connection.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from conference import moderation
from conference.errors import SfuCode, SfuError
from conference.events import LeaveReason
from conference.ids import Identity, TrackId
from signaling.errors import CloseCode, ErrorCode, SignalError
from signaling.protocol import MESSAGES, Message, Metadata, Name, Sdp, ShortId
from signaling.session import ParticipantSession

Target = Literal["publisher", "subscriber"]
Topic = Annotated[str, msgspec.Meta(max_length=128)]


class Leave(Message, tag="leave"):
    pass


@MESSAGES.handles(Leave)
async def handle_leave(s: ParticipantSession, m: Leave) -> None:
    s.reply(m.id, {"type": "left"})
    s.leave(LeaveReason.CLIENT_LEFT)
    s.link.close(CloseCode.NORMAL, "left")


class Update(Message, tag="update"):
    name: Name | None = None
    metadata: Metadata | None = None


@MESSAGES.handles(Update)
async def handle_update(s: ParticipantSession, m: Update) -> None:
    room, p = s.require_participant()
    room.update_participant(p.id, name=m.name, metadata=m.metadata)
    s.reply(m.id, {"type": "updated", "participant": p.info().to_wire()})


class RemoveTrack(Message, tag="remove-track"):
    track: ShortId


@MESSAGES.handles(RemoveTrack)
async def handle_remove_track(s: ParticipantSession, m: RemoveTrack) -> None:
    """Unpublish: the room is told and forwarding stops at once."""
    room, p = s.require_participant()
    track = room.remove_track(p.id, TrackId(m.track))
    s.reply(m.id, {"type": "track-removed", "track": track.to_wire()})


class MuteTrack(Message, tag="mute-track"):
    track: ShortId
    muted: bool


@MESSAGES.handles(MuteTrack)
async def handle_mute_track(s: ParticipantSession, m: MuteTrack) -> None:
    """Muting one's own track, or (a moderator) someone else's."""
    room, p = s.require_participant()
    tid = TrackId(m.track)
    if tid in p.tracks:
        track = room.set_track_muted(p.id, tid, m.muted)
    else:
        track = moderation.set_track_muted(room, p.id, tid, m.muted)
    s.reply(m.id, {"type": "track-updated", "track": track.to_wire()})


class PublishedTrack(msgspec.Struct, frozen=True):
    """What the publisher says of one m-line of its offer."""

    mid: Annotated[str, msgspec.Meta(max_length=32)]
    source: Annotated[str, msgspec.Meta(max_length=32)] = ""
    name: Name = ""


class Offer(Message, tag="offer"):
    sdp: Sdp
    tracks: list[PublishedTrack] | None = None


@MESSAGES.handles(Offer)
async def handle_offer(s: ParticipantSession, m: Offer) -> None:
    room, p = s.require_participant()
    meta = {t.mid: {"source": t.source, "name": t.name} for t in m.tracks or ()}
    answer, new = await room.media.publish(p.id, m.sdp, meta)
    s.reply(m.id, {"type": "answer", "target": "publisher", "sdp": answer,
                   "tracks": [p.tracks[t].to_wire() | {"mid": room.media.mid_of(p.id, t)}
                              for t in new if t in p.tracks]})


class Answer(Message, tag="answer"):
    sdp: Sdp


@MESSAGES.handles(Answer)
async def handle_answer(s: ParticipantSession, m: Answer) -> None:
    room, p = s.require_participant()
    await room.media.answer(p.id, m.sdp)
    if m.id is not None:
        s.reply(m.id, {"type": "answer-accepted"})


class Candidate(Message, tag="candidate"):
    target: Annotated[str, msgspec.Meta(max_length=16)]
    candidate: Any = None
    """An RTCIceCandidateInit object, or null for the end of candidates."""


@MESSAGES.handles(Candidate)
async def handle_candidate(s: ParticipantSession, m: Candidate) -> None:
    room, p = s.require_participant()
    if m.candidate is not None and not isinstance(m.candidate, dict):
        raise SfuError(SfuCode.INVALID_CANDIDATE, "candidate must be an object or null")
    await room.media.candidate(p.id, m.target, m.candidate)


class Subscription(Message, tag="subscription"):
    track: ShortId
    state: Literal["subscribed", "paused", "unsubscribed"]


@MESSAGES.handles(Subscription)
async def handle_subscription(s: ParticipantSession, m: Subscription) -> None:
    room, p = s.require_participant()
    room.media.set_subscription(p.id, TrackId(m.track), m.state)
    s.reply(m.id, {"type": "subscription-updated", "track": m.track, "state": m.state})


Pixels = Annotated[int, msgspec.Meta(ge=0, le=16384)]


class TrackSize(Message, tag="track-size"):
    track: ShortId
    width: Pixels
    height: Pixels


@MESSAGES.handles(TrackSize)
async def handle_track_size(s: ParticipantSession, m: TrackSize) -> None:
    room, p = s.require_participant()
    room.media.set_track_size(p.id, TrackId(m.track), m.width, m.height)
    if m.id is not None:
        s.reply(m.id, {"type": "ack", "action": "track-size"})


class Data(Message, tag="data"):
    payload: Any
    topic: Topic = ""
    to: list[Name] | None = None


@MESSAGES.handles(Data)
async def handle_data(s: ParticipantSession, m: Data) -> None:
    room, p = s.require_participant()
    delivered = room.send_data(p.id, m.payload, topic=m.topic,
                               to=[Identity(i) for i in m.to] if m.to is not None else None)
    if delivered is None:
        raise SignalError(ErrorCode.RATE_LIMITED,
                          "app data over the participant's rate (socket and data channel "
                          "together); slow down", m.id)
    if m.id is not None:
        s.reply(m.id, {"type": "data-sent", "delivered": delivered})
