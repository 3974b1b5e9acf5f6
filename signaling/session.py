"""ParticipantSession: one participant's handlers, run where its room lives.

A session is opened by a join (``ParticipantSession.open``) and ends when its
participant leaves the room. It holds the room and the participant, serves
every client message but ``join`` and ``ping`` (signaling/handlers.py and
signaling/stage_handlers.py), turns room events into server messages, and
reaches its client only through a ``ClientLink``: on one node that is the
connection itself; between nodes, a relay. It never touches the socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from conference.errors import ConferenceError, SfuError
from conference.events import RESUMABLE, Disconnected, LeaveReason, RoomEvent
from conference.manager import JoinRequest
from conference.participant import Participant
from conference.room import Room
from signaling import __version__
from signaling.auth import Claims
from signaling.errors import CloseCode, ErrorCode, SignalError, WireCode
from signaling.ice import ice_servers
from signaling.link import ClientLink
from signaling.node import Node
from signaling.protocol import (
    MESSAGES,
    PROTOCOL_VERSION,
    Message,
    encode,
    encode_error,
    encode_event,
    reply,
)
from signaling.resume import ResumeClaim

log = logging.getLogger("parley.session")

_CLOSE_FOR_REASON = {
    LeaveReason.DUPLICATE_IDENTITY: CloseCode.REPLACED,
    LeaveReason.REMOVED: CloseCode.REMOVED,
    LeaveReason.ROOM_CLOSED: CloseCode.ROOM_CLOSED,
    LeaveReason.SERVER_SHUTDOWN: CloseCode.GOING_AWAY,
    LeaveReason.NODE_DRAINING: CloseCode.RECONNECT,
    LeaveReason.ROOM_MOVED: CloseCode.RECONNECT,
}


def message_type(message: Message) -> str:
    return str(message.__struct_config__.tag)


class ParticipantSession:
    """Implements ``SessionPort``. ``leave()`` is idempotent."""

    def __init__(self, node: Node, link: ClientLink, remote: str | None = None) -> None:
        self.node = node
        self.link = link
        self.remote = remote
        self.room: Room | None = None
        self.participant: Participant | None = None
        self._key = ""
        """The API key that signed the join token; it signs the resume tokens too."""
        self._refresh: asyncio.TimerHandle | None = None
        """Sends a fresh resume token every third of the resume window."""

    @classmethod
    async def open(cls, node: Node, link: ClientLink, claims: Claims, *, msg_id: str | None,
                   version: int, media: bool, remote: str | None = None,
                   resume: str | None = None) -> ParticipantSession:
        """Join the room and send ``joined``; raises ``ConferenceError`` when the room
        refuses. A valid ``resume`` token of the same room and identity takes its
        participant back; an invalid or expired one is ignored (a join as new)."""
        started = time.perf_counter()
        session = cls(node, link, remote)
        session._key = claims.key
        claim = _resume_claim(node, claims, resume)
        room, participant = await node.rooms.join(JoinRequest(
            room=claims.grants.room, identity=claims.identity, name=claims.name,
            metadata=claims.metadata, grants=claims.grants, sink=session.deliver,
            token_id=claims.token_id, token_expires=claims.expires_at,
            data_rate=node.config.signaling.rate_limit_per_second,
            data_burst=node.config.signaling.rate_limit_burst,
            media=media and node.config.sfu.enabled,
            resume=claim.participant if claim is not None else None))
        session.room, session.participant = room, participant
        resumed = claim is not None and claim.participant == participant.id
        session.reply(msg_id, session._joined(version, resumed))
        session._schedule_refresh()
        node.metrics.join_latency.observe(time.perf_counter() - started)
        return session

    def _joined(self, version: int, resumed: bool) -> dict[str, Any]:
        room, participant = self.require_participant()
        return {
            "type": "joined",
            "version": version,
            "room": room.name,
            "participant": participant.info().to_wire(),
            "participants": [p.info().to_wire()
                             for p in room.visible_participants(participant.id)],
            "grants": participant.grants.to_wire(),
            "ice_servers": ice_servers(self.node.config.ice, participant.identity),
            "room_options": {"max_speakers": room.options.max_speakers,
                             "stage_policy": room.options.stage_policy.value},
            "speaker_requests": [
                {"participant": rp.info().to_wire(), "message": msg, "expires_at": exp}
                for rp, msg, exp in room.stage.pending_requests()
            ] if participant.grants.room_admin else [],
            "server": {"version": __version__, "node": self.node.id,
                       "protocol": PROTOCOL_VERSION},
            "resumed": resumed,
            "subscriptions": dict(participant.subscriptions) if resumed else {},
            **self._resume_fields(),
        }

    # -- resumption ------------------------------------------------------------------
    def _resume_fields(self) -> dict[str, Any]:
        room, participant = self.require_participant()
        window = self.node.config.signaling.resume_window
        if window <= 0:
            return {"resume_token": None, "resume_expires_at": None}
        expires = round(time.time() + window, 3)
        token = self.node.resume_tokens.mint(
            key=self._key, room=room.name, participant=participant.id,
            identity=participant.identity, expires_at=expires)
        return {"resume_token": token, "resume_expires_at": expires}

    def _schedule_refresh(self) -> None:
        window = self.node.config.signaling.resume_window
        if window > 0 and self.participant is not None:
            self._refresh = asyncio.get_running_loop().call_later(
                window / 3, self._send_resume_token)

    def _send_resume_token(self) -> None:
        self._refresh = None
        if self.participant is not None:
            self.link.send(encode({"type": "resume-token", **self._resume_fields()}))
            self._schedule_refresh()

    def _stop_refresh(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None

    # -- SessionPort -------------------------------------------------------------
    async def handle(self, message: Message) -> None:
        mtype = message_type(message)
        try:
            if self.participant is None:
                raise SignalError(ErrorCode.NOT_JOINED, "join first")
            await MESSAGES.spec(mtype).handler(self, message)
        except SignalError as err:
            self.send_error(err.code, err.message, err.msg_id or message.id)
        except (ConferenceError, SfuError) as err:
            self.send_error(err.code, err.message, message.id)
        except Exception:
            log.exception("handler failed", extra=self.log_extra() | {"type": mtype})
            self.send_error(ErrorCode.INTERNAL_ERROR, "internal error", message.id)

    def leave(self, reason: LeaveReason) -> None:
        """A lost socket (``RESUMABLE``) holds the participant for the resume window."""
        self._stop_refresh()
        if self.room is not None and self.participant is not None:
            if reason in RESUMABLE:
                self.node.rooms.suspend(self.room.name, self.participant.id, reason,
                                        self.node.config.signaling.resume_window)
            else:
                self.node.rooms.leave(self.room.name, self.participant.id, reason)
        self.participant = None

    # -- towards the client --------------------------------------------------------
    def deliver(self, event: RoomEvent) -> None:
        """The participant's event sink (called by the Room; never blocks)."""
        self.link.send(encode_event(event))
        if isinstance(event, Disconnected):
            self.participant = None
            self._stop_refresh()
            self.link.close(_CLOSE_FOR_REASON.get(event.reason, CloseCode.NORMAL),
                            event.reason.value)

    def reply(self, msg_id: str | None, message: dict[str, Any]) -> None:
        self.link.send(reply(msg_id, message))

    def send_error(self, code: WireCode, message: str, msg_id: str | None = None) -> None:
        self.node.metrics.error(code.value)
        self.link.send(encode_error(code, message, msg_id))

    def require_participant(self) -> tuple[Room, Participant]:
        if self.room is None or self.participant is None:
            raise SignalError(ErrorCode.NOT_JOINED, "join first")
        return self.room, self.participant

    def log_extra(self) -> dict[str, Any]:
        return {
            "room": self.room.name if self.room else None,
            "participant": self.participant.id if self.participant else None,
            "remote": self.remote,
        }


def _resume_claim(node: Node, claims: Claims, resume: str | None) -> ResumeClaim | None:
    """The verified resume token, if it is for the join token's room and identity."""
    claim = node.resume_tokens.verify(resume) if resume else None
    if claim is None or claim.room != claims.grants.room or claim.identity != claims.identity:
        return None
    return claim
