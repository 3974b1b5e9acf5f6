"""The stage: who may publish, requests to speak, invitations, and demotion.

The server is the only authority: a listener asks (or is invited and
accepts), a moderator or the room's policy approves, and only then do the
participant's grants change. Every change is a room event and one structured
``stage`` log line (who, what, by whom) for audit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import Protocol

from conference.cluster.state import PendingRequest, RoomStateHandle
from conference.config import RoomOptions, StagePolicy
from conference.errors import ConferenceCode, ConferenceError
from conference.events import (
    RoomEvent,
    SpeakerRequested,
    SpeakerRequestResolved,
    StageInvited,
    StageInviteResolved,
)
from conference.ids import Identity, ParticipantId, RoomName
from conference.participant import Participant
from conference.permissions import Grants


class StageRoom(Protocol):
    """What the stage asks of its room (the Room implements it)."""

    name: RoomName
    state: RoomStateHandle

    @property
    def options(self) -> RoomOptions: ...

    def get(self, pid: ParticipantId) -> Participant | None: ...
    def require(self, pid: ParticipantId) -> Participant: ...
    def require_moderator(self, pid: ParticipantId | None) -> None: ...
    def stage_full(self, exclude: ParticipantId | None = None) -> bool: ...
    def set_grants(self, pid: ParticipantId, grants: Grants, *, reason: str,
                   by: ParticipantId | None) -> Participant: ...
    def stop_publishing(self, pid: ParticipantId) -> None: ...
    def to_moderators(self, event: RoomEvent, exclude: ParticipantId | None = None) -> None: ...

audit = logging.getLogger("parley.stage")


@dataclass
class _Pending:
    participant: ParticipantId
    message: str
    expires_at: float
    timer: asyncio.TimerHandle
    by: ParticipantId | None = None
    """Who invited (invitations only)."""


class Stage:
    """One per room; owns the timers of pending requests and invitations.

    ``close()`` cancels them; it is idempotent.
    """

    def __init__(self, room: StageRoom) -> None:
        self._room = room
        self.requests: dict[ParticipantId, _Pending] = {}
        self.invites: dict[ParticipantId, _Pending] = {}

    # -- requests to speak ---------------------------------------------------
    def request(self, pid: ParticipantId, message: str = "") -> str:
        """A listener asks to speak; returns ``pending`` or ``approved`` (auto policy)."""
        p = self._room.require(pid)
        if p.grants.can_publish:
            raise ConferenceError(ConferenceCode.ALREADY_SPEAKER, "already on stage")
        if not p.grants.can_request_publish or p.hidden:
            raise ConferenceError(ConferenceCode.PERMISSION_DENIED,
                                  "no permission to request to speak")
        if pid in self.requests:
            raise ConferenceError(ConferenceCode.ALREADY_REQUESTED, "a request is pending")
        options = self._room.options
        self._audit("request", pid, None, text=message)
        if options.stage_policy is StagePolicy.AUTO:
            self._promote(p, by=None, reason="auto-approved")
            self._resolve_request(pid, "approved", None, "auto-approved", pending=False)
            return "approved"
        self._pending_request(p, message, time.time() + options.speaker_request_timeout)
        return "pending"

    def _pending_request(self, p: Participant, message: str, expires_at: float) -> None:
        timer = asyncio.get_running_loop().call_later(
            max(0.0, expires_at - time.time()), self._expire_request, p.id)
        self.requests[p.id] = _Pending(participant=p.id, message=message,
                                       expires_at=expires_at, timer=timer)
        self._room.state.set_request(p.identity, PendingRequest(message=message,
                                                                expires_at=expires_at))
        self._room.to_moderators(SpeakerRequested(
            room=self._room.name, participant=p.info(), message=message,
            expires_at=expires_at))

    def restore(self, p: Participant) -> None:
        """A participant joined: a request to speak its identity left pending (a reconnect,
        or the room moving to another node) is pending again, with the time it had left."""
        stored = self._room.state.request_of(p.identity)
        if stored is not None and p.id not in self.requests and not p.grants.can_publish:
            self._pending_request(p, stored.message, stored.expires_at)

    def restore_grants(self, grants: Grants, identity: Identity) -> Grants:
        """The grants a joining identity gets: on stage again if a moderator put it there
        (and the stage has room), whatever its token says about publishing."""
        if (grants.can_publish or grants.hidden
                or identity not in self._room.state.state.speakers or self._room.stage_full()):
            return grants
        return replace(grants, can_publish=True, can_request_publish=False)

    def cancel_request(self, pid: ParticipantId) -> None:
        if pid not in self.requests:
            raise ConferenceError(ConferenceCode.NO_PENDING_REQUEST, "no pending request")
        self._resolve_request(pid, "cancelled", pid, "cancelled by the participant")

    def decide(self, moderator: ParticipantId | None, pid: ParticipantId, approve: bool,
               reason: str = "") -> None:
        """A moderator approves or denies a pending request."""
        self._room.require_moderator(moderator)
        self._target(pid)
        if pid not in self.requests:
            raise ConferenceError(ConferenceCode.NO_PENDING_REQUEST,
                                  "that participant has no pending request")
        if approve:
            p = self._room.require(pid)
            self._promote(p, by=moderator, reason=reason or "request approved")
        self._resolve_request(pid, "approved" if approve else "denied", moderator,
                              reason or ("approved" if approve else "denied"))

    def pending_requests(self) -> list[tuple[Participant, str, float]]:
        out = []
        for pending in self.requests.values():
            p = self._room.get(pending.participant)
            if p is not None:
                out.append((p, pending.message, pending.expires_at))
        return out

    def _expire_request(self, pid: ParticipantId) -> None:
        if pid in self.requests:
            self._resolve_request(pid, "timeout", None,
                                  "no moderator answered the request in time")

    def _resolve_request(self, pid: ParticipantId, outcome: str, by: ParticipantId | None,
                         reason: str, *, pending: bool = True) -> None:
        entry = self.requests.pop(pid, None)
        if entry is not None:
            entry.timer.cancel()
        elif pending:
            return
        requester = self._room.get(pid)
        if requester is not None:
            self._room.state.set_request(requester.identity, None)
        self._audit(f"request-{outcome}", pid, by, reason=reason)
        event = SpeakerRequestResolved(room=self._room.name, participant=pid, outcome=outcome,
                                       by=by, reason=reason)
        if requester is not None:
            requester.deliver(event)
        self._room.to_moderators(event, exclude=pid)

    # -- invitations -----------------------------------------------------------
    def invite(self, moderator: ParticipantId | None, pid: ParticipantId,
               message: str = "") -> None:
        """A moderator invites a listener; nothing changes until the listener accepts."""
        self._room.require_moderator(moderator)
        p = self._target(pid)
        if p.grants.can_publish:
            raise ConferenceError(ConferenceCode.ALREADY_SPEAKER, "already on stage")
        if pid in self.invites:
            raise ConferenceError(ConferenceCode.ALREADY_REQUESTED, "an invitation is pending")
        timeout = self._room.options.speaker_request_timeout
        timer = asyncio.get_running_loop().call_later(timeout, self._expire_invite, pid)
        self.invites[pid] = _Pending(participant=pid, message=message,
                                     expires_at=time.time() + timeout, timer=timer, by=moderator)
        self._audit("invite", pid, moderator, text=message)
        p.deliver(StageInvited(room=self._room.name, by=moderator, message=message))

    def respond(self, pid: ParticipantId, accept: bool) -> None:
        """The invitee accepts (goes on stage) or declines."""
        if pid not in self.invites:
            raise ConferenceError(ConferenceCode.NO_PENDING_REQUEST, "no pending invitation")
        if accept:
            p = self._room.require(pid)
            self._promote(p, by=self.invites[pid].by, reason="invitation accepted")
        self._resolve_invite(pid, "accepted" if accept else "declined", pid)

    def _expire_invite(self, pid: ParticipantId) -> None:
        if pid in self.invites:
            self._resolve_invite(pid, "timeout", None)

    def _resolve_invite(self, pid: ParticipantId, outcome: str,
                        by: ParticipantId | None) -> None:
        entry = self.invites.pop(pid, None)
        if entry is None:
            return
        entry.timer.cancel()
        self._audit(f"invite-{outcome}", pid, by)
        event = StageInviteResolved(room=self._room.name, participant=pid, outcome=outcome,
                                    by=by)
        invitee = self._room.get(pid)
        if invitee is not None:
            invitee.deliver(event)
        self._room.to_moderators(event, exclude=pid)

    # -- promotion and demotion -----------------------------------------------
    def _promote(self, p: Participant, *, by: ParticipantId | None, reason: str) -> None:
        if self._room.stage_full(exclude=p.id):
            raise ConferenceError(
                ConferenceCode.STAGE_FULL,
                f"the stage is full ({self._room.options.max_speakers} speakers)")
        grants = replace(p.grants, can_publish=True, can_request_publish=False)
        self._room.set_grants(p.id, grants, reason=reason, by=by)
        self._room.state.set_speaker(p.identity, True)
        self._resolve_invite(p.id, "accepted", p.id)  # an invitation it had is fulfilled
        self._audit("promoted", p.id, by, reason=reason)

    def demote(self, moderator: ParticipantId | None, pid: ParticipantId,
               reason: str = "") -> None:
        """Back to the audience: forwarding stops at once, the publish connection is closed."""
        self._room.require_moderator(moderator)
        p = self._target(pid)
        if not p.grants.can_publish:
            raise ConferenceError(ConferenceCode.NOT_A_SPEAKER, "not on stage")
        self._room.stop_publishing(pid)
        grants = replace(p.grants, can_publish=False, can_request_publish=True)
        self._room.set_grants(pid, grants, reason=reason or "moved to the audience",
                              by=moderator)
        self._room.state.set_speaker(p.identity, False)
        self._audit("demoted", pid, moderator, reason=reason)

    # -- housekeeping ------------------------------------------------------------
    def _target(self, pid: ParticipantId) -> Participant:
        p = self._room.get(pid)
        if p is None:
            raise ConferenceError(ConferenceCode.UNKNOWN_PARTICIPANT, "no such participant")
        return p

    def forget(self, pid: ParticipantId) -> None:
        """The participant left: its pending request or invitation ends quietly here (a
        stored request stays until it expires, for its identity to find on rejoining)."""
        for table in (self.requests, self.invites):
            entry = table.pop(pid, None)
            if entry is not None:
                entry.timer.cancel()

    def close(self) -> None:
        for table in (self.requests, self.invites):
            for entry in table.values():
                entry.timer.cancel()
            table.clear()

    def _audit(self, action: str, pid: ParticipantId, by: ParticipantId | None,
               **extra: str) -> None:
        p = self._room.get(pid)
        audit.info("stage %s", action, extra={
            "room": self._room.name, "action": action, "participant": pid,
            "identity": p.identity if p else None, "by": by, "at": time.time(), **extra})
