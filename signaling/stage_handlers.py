"""Stage (join as speaker) and moderation messages, each declared beside its handler."""

from __future__ import annotations

from conference import moderation
from conference.errors import ConferenceCode, ConferenceError
from conference.ids import ParticipantId
from signaling.protocol import MESSAGES, Message, Metadata, Name, ShortId, Text
from signaling.session import ParticipantSession


def _ack(s: ParticipantSession, m: Message, action: str) -> None:
    s.reply(m.id, {"type": "ack", "action": action})


class RequestToSpeak(Message, tag="request-to-speak"):
    message: Text = ""


@MESSAGES.handles(RequestToSpeak)
async def handle_request_to_speak(s: ParticipantSession, m: RequestToSpeak) -> None:
    room, p = s.require_participant()
    status = room.stage.request(p.id, m.message)
    s.reply(m.id, {"type": "speaker-request-status", "status": status})


class CancelSpeakerRequest(Message, tag="cancel-speaker-request"):
    pass


@MESSAGES.handles(CancelSpeakerRequest)
async def handle_cancel_request(s: ParticipantSession, m: CancelSpeakerRequest) -> None:
    room, p = s.require_participant()
    room.stage.cancel_request(p.id)
    s.reply(m.id, {"type": "speaker-request-status", "status": "cancelled"})


class ApproveSpeaker(Message, tag="approve-speaker"):
    participant: ShortId
    reason: Text = ""


class DenySpeaker(Message, tag="deny-speaker"):
    participant: ShortId
    reason: Text = ""


@MESSAGES.handles(ApproveSpeaker, DenySpeaker)
async def handle_decide(s: ParticipantSession, m: ApproveSpeaker | DenySpeaker) -> None:
    room, p = s.require_participant()
    approve = isinstance(m, ApproveSpeaker)
    room.stage.decide(p.id, ParticipantId(m.participant), approve, m.reason)
    _ack(s, m, "approve-speaker" if approve else "deny-speaker")


class InviteToStage(Message, tag="invite-to-stage"):
    participant: ShortId
    message: Text = ""


@MESSAGES.handles(InviteToStage)
async def handle_invite(s: ParticipantSession, m: InviteToStage) -> None:
    room, p = s.require_participant()
    room.stage.invite(p.id, ParticipantId(m.participant), m.message)
    _ack(s, m, "invite-to-stage")


class RespondToInvite(Message, tag="respond-to-invite"):
    accept: bool


@MESSAGES.handles(RespondToInvite)
async def handle_respond(s: ParticipantSession, m: RespondToInvite) -> None:
    room, p = s.require_participant()
    room.stage.respond(p.id, m.accept)
    _ack(s, m, "respond-to-invite")


class MoveToAudience(Message, tag="move-to-audience"):
    participant: ShortId
    reason: Text = ""


@MESSAGES.handles(MoveToAudience)
async def handle_move_to_audience(s: ParticipantSession, m: MoveToAudience) -> None:
    room, p = s.require_participant()
    room.stage.demote(p.id, ParticipantId(m.participant), m.reason)
    _ack(s, m, "move-to-audience")


class RemoveParticipant(Message, tag="remove-participant"):
    participant: ShortId
    reason: Text = ""


@MESSAGES.handles(RemoveParticipant)
async def handle_remove(s: ParticipantSession, m: RemoveParticipant) -> None:
    room, p = s.require_participant()
    room.require_moderator(p.id)
    target = ParticipantId(m.participant)
    if room.get(target) is None:
        raise ConferenceError(ConferenceCode.UNKNOWN_PARTICIPANT, "no such participant")
    s.node.rooms.remove(room.name, target, reason=m.reason, by=p.id)
    _ack(s, m, "remove-participant")


class UpdateParticipant(Message, tag="update-participant"):
    participant: ShortId
    name: Name | None = None
    metadata: Metadata | None = None


@MESSAGES.handles(UpdateParticipant)
async def handle_update_participant(s: ParticipantSession, m: UpdateParticipant) -> None:
    room, p = s.require_participant()
    moderation.update_participant(room, p.id, ParticipantId(m.participant),
                                  name=m.name, metadata=m.metadata)
    _ack(s, m, "update-participant")
