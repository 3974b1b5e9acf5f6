"""Handlers for the stage (join as speaker) and moderation messages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from conference import moderation
from conference.errors import ConferenceCode, ConferenceError
from conference.ids import ParticipantId
from signaling.protocol import ClientMessage

if TYPE_CHECKING:
    from signaling.session import SignalSession

Handler = Callable[["SignalSession", ClientMessage], Awaitable[None]]


def _ack(s: SignalSession, m: ClientMessage) -> None:
    s.reply(m.id, {"type": "ack", "action": m.type})


async def handle_request_to_speak(s: SignalSession, m: ClientMessage) -> None:
    room, p = s.require_participant()
    status = room.stage.request(p.id, m.body.get("message", ""))
    s.reply(m.id, {"type": "speaker-request-status", "status": status})


async def handle_cancel_request(s: SignalSession, m: ClientMessage) -> None:
    room, p = s.require_participant()
    room.stage.cancel_request(p.id)
    s.reply(m.id, {"type": "speaker-request-status", "status": "cancelled"})


async def handle_approve(s: SignalSession, m: ClientMessage) -> None:
    room, p = s.require_participant()
    room.stage.decide(p.id, ParticipantId(m.body["participant"]), True, m.body.get("reason", ""))
    _ack(s, m)


async def handle_deny(s: SignalSession, m: ClientMessage) -> None:
    room, p = s.require_participant()
    room.stage.decide(p.id, ParticipantId(m.body["participant"]), False,
                      m.body.get("reason", ""))
    _ack(s, m)


async def handle_invite(s: SignalSession, m: ClientMessage) -> None:
    room, p = s.require_participant()
    room.stage.invite(p.id, ParticipantId(m.body["participant"]), m.body.get("message", ""))
    _ack(s, m)


async def handle_respond(s: SignalSession, m: ClientMessage) -> None:
    room, p = s.require_participant()
    room.stage.respond(p.id, m.body["accept"])
    _ack(s, m)


async def handle_move_to_audience(s: SignalSession, m: ClientMessage) -> None:
    room, p = s.require_participant()
    room.stage.demote(p.id, ParticipantId(m.body["participant"]), m.body.get("reason", ""))
    _ack(s, m)


async def handle_remove(s: SignalSession, m: ClientMessage) -> None:
    room, p = s.require_participant()
    moderation.require_moderator(room, p.id)
    target = ParticipantId(m.body["participant"])
    if room.get(target) is None:
        raise ConferenceError(ConferenceCode.UNKNOWN_PARTICIPANT, "no such participant")
    s.node.rooms.remove(room.name, target, reason=m.body.get("reason", ""), by=p.id)
    _ack(s, m)


async def handle_update_participant(s: SignalSession, m: ClientMessage) -> None:
    room, p = s.require_participant()
    moderation.update_participant(room, p.id, ParticipantId(m.body["participant"]),
                                  name=m.body.get("name"), metadata=m.body.get("metadata"))
    _ack(s, m)


STAGE_HANDLERS: dict[str, Handler] = {
    "request-to-speak": handle_request_to_speak,
    "cancel-speaker-request": handle_cancel_request,
    "approve-speaker": handle_approve,
    "deny-speaker": handle_deny,
    "invite-to-stage": handle_invite,
    "respond-to-invite": handle_respond,
    "move-to-audience": handle_move_to_audience,
    "remove-participant": handle_remove,
    "update-participant": handle_update_participant,
}
