"""The RoomManager: creates rooms on first join, closes them when empty too long."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from conference.cluster.state import InMemoryRoomStateStore, RoomStateHandle, RoomStateStore
from conference.config import RoomConfig
from conference.errors import ConferenceCode, ConferenceError
from conference.events import Disconnected, LeaveReason, Removed
from conference.ids import Identity, NodeId, ParticipantId, RoomName, new_participant_id
from conference.media import RoomMedia
from conference.mediaport import MediaPort
from conference.metrics import ConferenceMetrics, MediaCollector
from conference.participant import EventSink, Participant
from conference.permissions import Grants
from conference.ratelimit import TokenBucket
from conference.registry import RoomRegistry
from conference.room import Room
from sfu.config import SfuConfig
from sfu.hooks import restrict_host_addresses
from sfu.stats import ForwardingStats
from sfu.tasks import TaskSet
from sfu.udpmux import node_media_socket

log = logging.getLogger("parley.rooms")


@dataclass(frozen=True, kw_only=True)
class JoinRequest:
    """What the edge knows about a joining client after checking its token."""

    room: RoomName
    identity: Identity
    name: str
    metadata: str
    grants: Grants
    sink: EventSink
    media: bool = False
    """Open a subscribe connection (and allow publishing) through the SFU."""
    token_expires: float = 0.0
    token_id: str = ""
    """Identifies the join token (its ``jti``, else a hash); a removed token cannot rejoin."""
    data_rate: float = 0.0
    """App data messages per second the participant may send, socket and data channel
    together (0: no limit)."""
    data_burst: int = 0
    """App data messages it may send at once before ``data_rate`` applies."""
    resume: ParticipantId | None = None
    """The participant id of a verified resume token (same room and identity): a
    participant of that id still held in the room is taken back (its grants, stage place
    and subscriptions kept); otherwise the joiner gets that id."""


class RoomManager:
    """Owns every Room on this node and the timers that close empty ones.

    ``close()`` closes every room (participants are told why) and releases
    them in the registry; it is idempotent.
    """

    def __init__(
        self,
        config: RoomConfig,
        registry: RoomRegistry,
        node: NodeId,
        metrics: ConferenceMetrics,
        sfu: SfuConfig | None = None,
        state: RoomStateStore | None = None,
    ) -> None:
        self._config = config
        self._sfu = sfu or SfuConfig(enabled=False)
        self._registry = registry
        self._state = state or InMemoryRoomStateStore()
        self._opening: dict[RoomName, asyncio.Task[Room]] = {}
        """Rooms being claimed and loaded: concurrent first joins wait on the same task."""
        self._node = node
        self._metrics = metrics
        self._rooms: dict[RoomName, Room] = {}
        self._empty_timers: dict[RoomName, asyncio.TimerHandle] = {}
        self._resume_timers: dict[tuple[RoomName, ParticipantId], asyncio.TimerHandle] = {}
        """Participants held after their socket dropped, until they resume or leave."""
        self._tasks = TaskSet("room-release")
        self.draining = False
        self._closed = False
        self._closed_stats = ForwardingStats()
        metrics.registry.register(MediaCollector(self.media_snapshot))
        if self._sfu.enabled and self._sfu.ice_addresses:
            restrict_host_addresses(self._sfu.ice_addresses)

    @contextlib.asynccontextmanager
    async def media_socket(self) -> AsyncIterator[None]:
        """Hold the node's shared media socket (``sfu.udp_port``) while rooms may exist."""
        async with node_media_socket(self._sfu):
            yield

    def _media(self, room: Room) -> MediaPort:
        return RoomMedia(room, self._sfu, self._metrics)

    def media_snapshot(self) -> tuple[ForwardingStats, dict[str, int]]:
        """Cumulative forwarding stats of every room, and live SFU object counts."""
        total = ForwardingStats()
        total.add(self._closed_stats)
        counts = {"producers": 0, "consumers": 0, "peer_connections": 0}
        for room in self._rooms.values():
            total.add(room.media.forwarding_stats())
            for key, value in room.media.counts().items():
                counts[key] += value
        return total, counts

    @property
    def node(self) -> NodeId:
        return self._node

    @property
    def rooms(self) -> dict[RoomName, Room]:
        return dict(self._rooms)

    def get(self, name: RoomName) -> Room | None:
        return self._rooms.get(name)

    def participant_count(self) -> int:
        return sum(len(r) for r in self._rooms.values())

    def connected_count(self) -> int:
        """Participants not held after a dropped socket."""
        return sum(1 for r in self._rooms.values() for p in r.participants
                   if not p.reconnecting)

    async def join(self, request: JoinRequest) -> tuple[Room, Participant]:
        """Add a participant, creating the room if needed.

        An older session of the same identity is replaced: it is told
        ``duplicate_identity`` and leaves before the new one joins.
        """
        if self._closed or (self.draining and request.room not in self._rooms):
            self._check_open()  # a draining node keeps its meetings, takes no new room
        room = self._rooms.get(request.room)
        if room is None:  # (an empty Room is falsy: it has a length)
            room = await self._open_room(request.room)
        if request.token_id and room.is_banned(request.token_id):
            raise ConferenceError(ConferenceCode.BANNED,
                                  "removed from this room; a new token is needed to rejoin")
        older = room.by_identity(request.identity)
        if older is not None and request.resume is not None and older.id == request.resume:
            return self._resume(room, older, request)
        if older is not None:
            self._leave(room, older.id, LeaveReason.DUPLICATE_IDENTITY,
                        notify="the same identity joined from another session")
        participant = self._participant(request, room)
        room.add(participant)  # raises room_full / room_closed
        if request.media:
            try:
                room.media.attach(participant)
            except ConferenceError:
                room.remove(participant.id, LeaveReason.DISCONNECTED)
                raise
        room.stage.restore(participant)
        self._cancel_empty_timer(room.name)
        self._metrics.participants.set(self.participant_count())
        await self._registry.set_participant_count(room.name, len(room))
        log.info("participant joined",
                 extra={"room": room.name, "participant": participant.id,
                        "identity": participant.identity})
        return room, participant

    def _resume(self, room: Room, p: Participant,
                request: JoinRequest) -> tuple[Room, Participant]:
        """Take a participant back: its id, grants, stage place and subscriptions."""
        if not p.reconnecting:  # its old socket is not known to be gone yet
            p.deliver(Disconnected(room=room.name, reason=LeaveReason.DUPLICATE_IDENTITY,
                                   message="resumed from another connection"))
            room.suspend(p.id)
        self._cancel_resume_timer(room.name, p.id)
        p.token_id, p.token_expires = request.token_id, request.token_expires
        room.resume(p.id, request.sink)
        if request.media:
            try:
                room.media.attach(p)
            except ConferenceError:
                self._leave(room, p.id, LeaveReason.DISCONNECTED, None)
                raise
        room.stage.restore(p)
        self._metrics.resumed.inc()
        log.info("participant resumed",
                 extra={"room": room.name, "participant": p.id, "identity": p.identity})
        return room, p

    def suspend(self, room_name: RoomName, pid: ParticipantId, reason: LeaveReason,
                window: float) -> bool:
        """The participant's socket dropped: hold it in the room (without media) for
        ``window`` seconds, then it leaves with ``reason``; 0 leaves at once."""
        room = self._rooms.get(room_name)
        if room is None or room.get(pid) is None:
            return False
        if window <= 0:
            return self._leave(room, pid, reason, None)
        room.suspend(pid)
        self._cancel_resume_timer(room_name, pid)
        self._resume_timers[(room_name, pid)] = asyncio.get_running_loop().call_later(
            window, self._resume_expired, room_name, pid, reason)
        log.info("participant reconnecting",
                 extra={"room": room_name, "participant": pid, "reason": reason.value})
        return True

    def _resume_expired(self, room_name: RoomName, pid: ParticipantId,
                        reason: LeaveReason) -> None:
        self._resume_timers.pop((room_name, pid), None)
        room = self._rooms.get(room_name)
        p = room.get(pid) if room is not None else None
        if room is not None and p is not None and p.reconnecting:
            self._leave(room, pid, reason, None)

    def _cancel_resume_timer(self, room_name: RoomName, pid: ParticipantId) -> None:
        timer = self._resume_timers.pop((room_name, pid), None)
        if timer is not None:
            timer.cancel()

    def _check_open(self) -> None:
        if self._closed or self.draining:
            raise ConferenceError(ConferenceCode.NODE_DRAINING, "node is not taking new joins")

    async def _open_room(self, name: RoomName) -> Room:
        """Claim the room for this node and load its state; one claim per room at a time."""
        task = self._opening.get(name)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._create_room(name),
                                                          name="room-open")
            self._opening[name] = task
            task.add_done_callback(lambda _: self._opening.pop(name, None))
        # Shielded: one joiner giving up must not cancel the others' room.
        room = await asyncio.shield(task)
        self._check_open()
        return room

    async def _create_room(self, name: RoomName) -> Room:
        owner = await self._registry.claim_room(name, self._node)  # may be cluster_unavailable
        if owner != self._node:
            raise ConferenceError(ConferenceCode.ROOM_ON_OTHER_NODE,
                                  f"room {name!r} lives on node {owner}; join through it")
        try:
            stored = await self._state.load(name)
        except ConferenceError:
            self._tasks.spawn(self._release(name))
            raise
        if self._closed:
            self._tasks.spawn(self._release(name))
            raise ConferenceError(ConferenceCode.NODE_DRAINING, "node is not taking new joins")
        handle = RoomStateHandle(name, stored, self._state)
        room = Room(name, self._config, media=self._media if self._sfu.enabled else None,
                    metrics=self._metrics, state=handle)
        self._state.opened(handle)
        self._rooms[name] = room
        self._metrics.rooms.set(len(self._rooms))
        self._metrics.rooms_created.inc()
        log.info("room created", extra={"room": name})
        self._start_empty_timer(room)  # until its first participant is in
        return room

    def _participant(self, request: JoinRequest, room: Room) -> Participant:
        return Participant(
            token_id=request.token_id,
            id=request.resume if request.resume is not None and room.get(request.resume) is None
            else new_participant_id(),
            identity=request.identity,
            name=request.name,
            metadata=request.metadata,
            grants=room.stage.restore_grants(request.grants, request.identity),
            sink=request.sink,
            token_expires=request.token_expires,
            data_budget=TokenBucket(request.data_rate, request.data_burst)
            if request.data_rate > 0 else None,
        )

    def leave(
        self, room_name: RoomName, pid: ParticipantId, reason: LeaveReason,
        notify: str | None = None,
    ) -> bool:
        """Remove a participant (no-op if already gone); starts the empty timer."""
        room = self._rooms.get(room_name)
        if room is None:
            return False
        return self._leave(room, pid, reason, notify)

    def remove(self, room_name: RoomName, pid: ParticipantId, *, reason: str,
               by: ParticipantId | None, token_expires: float | None = None) -> bool:
        """Remove a participant (moderator or admin): it is told why and its token is barred
        from this room until the token expires."""
        room = self._rooms.get(room_name)
        participant = room.get(pid) if room else None
        if room is None or participant is None:
            return False
        if participant.token_id:
            room.ban(participant.token_id, token_expires or participant.token_expires)
        room.state.set_speaker(participant.identity, False)
        participant.deliver(Removed(room=room_name, by=by, reason=reason))
        log.info("participant removed", extra={"room": room_name, "participant": pid,
                                               "by": by, "reason": reason})
        return self._leave(room, pid, LeaveReason.REMOVED, reason or "removed by a moderator")

    def _leave(
        self, room: Room, pid: ParticipantId, reason: LeaveReason, notify: str | None
    ) -> bool:
        self._cancel_resume_timer(room.name, pid)
        if not room.remove(pid, reason, notify):
            return False
        self._metrics.participants.set(self.participant_count())
        self._metrics.participants_left.labels(reason=reason.value).inc()
        log.info("participant left",
                 extra={"room": room.name, "participant": pid, "reason": reason.value})
        if len(room) == 0:
            self._start_empty_timer(room)
        return True

    def _start_empty_timer(self, room: Room) -> None:
        self._cancel_empty_timer(room.name)
        loop = asyncio.get_running_loop()
        self._empty_timers[room.name] = loop.call_later(
            self._config.empty_timeout, self._close_if_empty, room.name
        )

    def _cancel_empty_timer(self, name: RoomName) -> None:
        timer = self._empty_timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _close_if_empty(self, name: RoomName) -> None:
        self._empty_timers.pop(name, None)
        room = self._rooms.get(name)
        if room is not None and len(room) == 0:
            self._close_room(room, LeaveReason.ROOM_CLOSED, "room closed")

    def close_room(self, name: RoomName, message: str = "room closed") -> bool:
        """Close a room now, telling everyone in it."""
        room = self._rooms.get(name)
        if room is None:
            return False
        self._close_room(room, LeaveReason.ROOM_CLOSED, message)
        return True

    def _close_room(self, room: Room, reason: LeaveReason, message: str) -> None:
        self._cancel_empty_timer(room.name)
        for key in [k for k in self._resume_timers if k[0] == room.name]:
            self._cancel_resume_timer(*key)
        room.close(reason, message)
        self._rooms.pop(room.name, None)
        self._closed_stats.add(room.media.forwarding_stats())
        self._tasks.spawn(room.wait_closed())
        self._metrics.rooms.set(len(self._rooms))
        self._metrics.participants.set(self.participant_count())
        log.info("room closed", extra={"room": room.name, "reason": reason.value})
        self._state.closed(room.name)
        self._tasks.spawn(self._release(room.name))

    async def _release(self, name: RoomName) -> None:
        try:
            await self._registry.release_room(name, self._node)
        except ConferenceError as err:  # the claim stays until this node's record expires
            log.warning("room not released", extra={"room": name, "code": err.code.value})

    async def hand_over(self) -> None:
        """Draining: every room goes to the cluster. Its state is written and its claim
        released first, so that its participants, told to reconnect (``node_draining``),
        find it free on another node; then it closes here."""
        rooms = list(self._rooms.values())
        if not rooms:
            return
        if not await self._state.flush():
            log.warning("room state not written before the hand-over")
        for room in rooms:
            await self._release(room.name)
        for room in rooms:
            if self._rooms.get(room.name) is room:
                self._close_room(room, LeaveReason.NODE_DRAINING,
                                 "the node is going away; reconnect")
        log.info("rooms handed over", extra={"rooms": len(rooms)})

    def give_up(self, name: RoomName) -> bool:
        """Another node owns the room now (this one was cut off from the cluster): close
        this copy without writing its state, its participants told to reconnect
        (``room_moved``). The release that follows is a no-op, the claim being another's."""
        room = self._rooms.get(name)
        if room is None:
            return False
        self._close_room(room, LeaveReason.ROOM_MOVED,
                         "another node took this room over; reconnect")
        return True

    async def close(self) -> None:
        """Close every room (participants told ``server_shutdown``). Idempotent."""
        if self._closed:
            return
        self._closed = True
        opening = list(self._opening.values())
        for task in opening:
            task.cancel()
        for key in list(self._resume_timers):
            self._cancel_resume_timer(*key)
        await asyncio.gather(*opening, return_exceptions=True)
        for room in list(self._rooms.values()):
            self._close_room(room, LeaveReason.SERVER_SHUTDOWN, "the server is shutting down")
        await self._tasks.wait()
