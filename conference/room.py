"""A Room: its participants, their tracks, and the fan-out of room events."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from conference.cluster.state import RoomStateHandle
from conference.config import RoomConfig, RoomOptions
from conference.errors import ConferenceCode, ConferenceError
from conference.events import (
    DataReceived,
    Disconnected,
    LeaveReason,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    PermissionChanged,
    RoomEvent,
    TrackInfo,
    TrackKind,
    TrackPublished,
    TrackSource,
    TrackUnpublished,
    TrackUpdated,
)
from conference.ids import Identity, ParticipantId, RoomName, TrackId, new_track_id
from conference.mediaport import MediaPort, NoMedia
from conference.metrics import ConferenceMetrics
from conference.participant import EventSink, Participant
from conference.permissions import Grants
from conference.stage import Stage

MediaFactory = Callable[["Room"], MediaPort]

log = logging.getLogger("parley.room")


def _nowhere(event: RoomEvent) -> None:
    """The sink of a suspended participant: events are dropped (it gets a fresh ``joined``
    when it resumes)."""


class Room:
    """Created by the RoomManager on first join; closed by it when empty for too long.

    All methods run on the node's event loop and never block; events reach
    participants through their sinks. The room calls its media port itself:
    removing a track, muting it, demoting or removing a participant is one
    call here and reaches the SFU once.

    Closing: ``close()`` tells everyone and empties the room at once;
    ``wait_closed()`` then awaits the media's own close. Both are idempotent.
    """

    def __init__(self, name: RoomName, config: RoomConfig,
                 media: MediaFactory | None = None,
                 metrics: ConferenceMetrics | None = None,
                 state: RoomStateHandle | None = None) -> None:
        self.name = name
        self._config = config
        self._metrics = metrics
        self._participants: dict[ParticipantId, Participant] = {}
        self.created_at = time.time()
        self.empty_since: float | None = time.monotonic()
        self.closed = False
        self.state = state or RoomStateHandle.detached(name)
        """What outlives the room on this node (options, stage places, removal bars,
        pending requests): every change is written through to the node's store."""
        self._options: RoomOptions = self.state.state.options or config.options()
        self.stage = Stage(self)
        self.media: MediaPort = media(self) if media is not None else NoMedia()
        """The SFU side of the room (``NoMedia`` on a signalling-only node)."""

    # -- queries ---------------------------------------------------------
    @property
    def participants(self) -> list[Participant]:
        return list(self._participants.values())

    def __len__(self) -> int:
        return len(self._participants)

    def get(self, pid: ParticipantId) -> Participant | None:
        return self._participants.get(pid)

    def by_identity(self, identity: Identity) -> Participant | None:
        for p in self._participants.values():
            if p.identity == identity:
                return p
        return None

    def visible_participants(self, exclude: ParticipantId | None = None) -> list[Participant]:
        return [p for p in self._participants.values() if not p.hidden and p.id != exclude]

    def moderators(self) -> list[Participant]:
        return [p for p in self._participants.values() if p.grants.room_admin]

    def speaker_count(self, exclude: ParticipantId | None = None) -> int:
        return sum(1 for p in self._participants.values()
                   if p.grants.can_publish and not p.hidden and p.id != exclude)

    def stage_full(self, exclude: ParticipantId | None = None) -> bool:
        cap = self.options.max_speakers
        return cap > 0 and self.speaker_count(exclude) >= cap

    @property
    def options(self) -> RoomOptions:
        return self._options

    @options.setter
    def options(self, options: RoomOptions) -> None:
        self._options = options
        self.state.set_options(options)

    def ban(self, token_id: str, until: float) -> None:
        """The token that joined as a removed participant may not rejoin until it expires."""
        self.state.bar(token_id, until)

    def is_banned(self, token_id: str) -> bool:
        return self.state.is_barred(token_id)

    def set_grants(self, pid: ParticipantId, grants: Grants, *, reason: str,
                   by: ParticipantId | None) -> Participant:
        """Change a participant's grants live: it is told, the room sees the update."""
        p = self.require(pid)
        p.grants = grants
        p.deliver(PermissionChanged(room=self.name, grants=grants.to_wire(), reason=reason,
                                    by=by))
        self._announce_update(p)
        return p

    def require_moderator(self, pid: ParticipantId | None) -> None:
        """``pid`` must hold ``room_admin``; ``None`` is the admin API (authorised by its
        bearer token)."""
        if pid is None:
            return
        p = self._participants.get(pid)
        if p is None or not p.grants.room_admin:
            raise ConferenceError(ConferenceCode.PERMISSION_DENIED, "moderators only")

    def to_moderators(self, event: RoomEvent, exclude: ParticipantId | None = None) -> None:
        for p in self.moderators():
            if p.id != exclude:
                p.deliver(event)

    def require(self, pid: ParticipantId) -> Participant:
        """The participant, or ``not_in_room``."""
        p = self._participants.get(pid)
        if p is None:
            raise ConferenceError(ConferenceCode.NOT_IN_ROOM, "not a participant of this room")
        return p

    # -- membership ------------------------------------------------------
    def add(self, participant: Participant) -> None:
        if self.closed:
            raise ConferenceError(ConferenceCode.ROOM_CLOSED, "room is closed")
        if participant.grants.can_publish and not participant.hidden and self.stage_full():
            raise ConferenceError(
                ConferenceCode.STAGE_FULL,
                f"the stage is full ({self.options.max_speakers} speakers); join as a listener")
        if len(self._participants) >= self._config.max_participants:
            raise ConferenceError(
                ConferenceCode.ROOM_FULL,
                f"room {self.name!r} is full ({self._config.max_participants} participants)",
            )
        self._participants[participant.id] = participant
        self.empty_since = None
        if not participant.hidden:
            self._broadcast(
                ParticipantJoined(room=self.name, participant=participant.info()),
                exclude=participant.id,
            )

    def remove(self, pid: ParticipantId, reason: LeaveReason, notify: str | None = None) -> bool:
        """Remove a participant; tell the room. ``notify`` also tells the participant itself."""
        participant = self._participants.pop(pid, None)
        if participant is None:
            return False
        self.stage.forget(pid)
        self.media.detach(pid)
        if notify is not None:
            participant.deliver(Disconnected(room=self.name, reason=reason, message=notify))
        if not participant.hidden:
            for track in participant.tracks.values():
                self._broadcast(TrackUnpublished(room=self.name, track=track))
            self._broadcast(
                ParticipantLeft(
                    room=self.name,
                    participant=participant.id,
                    identity=participant.identity,
                    reason=reason,
                )
            )
        if not self._participants:
            self.empty_since = time.monotonic()
        return True

    def suspend(self, pid: ParticipantId) -> None:
        """Its socket dropped: the participant stays, marked ``reconnecting``, without media
        (its connections close, its tracks are unpublished) and without events, until it
        resumes or leaves. Its stage place and pending request stay. Idempotent."""
        p = self._participants.get(pid)
        if p is None or p.reconnecting:
            return
        p.reconnecting = True
        p.sink = _nowhere
        self.media.detach(pid)
        tracks = list(p.tracks.values())
        p.tracks.clear()
        if not p.hidden:
            for track in tracks:
                self._broadcast(TrackUnpublished(room=self.name, track=track), exclude=pid)
        self._announce_update(p)

    def resume(self, pid: ParticipantId, sink: EventSink) -> Participant:
        """A suspended participant is back: events go to its new sink, the room is told."""
        p = self.require(pid)
        p.sink = sink
        p.reconnecting = False
        self._announce_update(p)
        return p

    def close(self, reason: LeaveReason, message: str) -> None:
        """Tell every participant and empty the room. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.stage.close()
        for p in list(self._participants.values()):
            p.deliver(Disconnected(room=self.name, reason=reason, message=message))
        self._participants.clear()

    async def wait_closed(self) -> None:
        """After ``close()``: close the media (every connection). Idempotent."""
        await self.media.close()

    # -- participant changes ------------------------------------------------
    def update_participant(
        self, pid: ParticipantId, *, name: str | None = None, metadata: str | None = None
    ) -> Participant:
        p = self.require(pid)
        if metadata is not None and len(metadata.encode()) > self._config.max_metadata_bytes:
            raise ConferenceError(ConferenceCode.METADATA_TOO_LARGE,
                                  f"metadata is limited to {self._config.max_metadata_bytes} bytes")
        if name is not None:
            p.name = name
        if metadata is not None:
            p.metadata = metadata
        self._announce_update(p)
        return p

    def _announce_update(self, p: Participant) -> None:
        if not p.hidden:
            self._broadcast(ParticipantUpdated(room=self.name, participant=p.info()))

    # -- tracks ------------------------------------------------------------
    def add_track(
        self, pid: ParticipantId, *, kind: TrackKind, source: TrackSource, name: str = ""
    ) -> TrackInfo:
        p = self.require(pid)
        if not p.grants.can_publish:
            raise ConferenceError(ConferenceCode.PERMISSION_DENIED, "no permission to publish")
        if len(p.tracks) >= self._config.max_tracks_per_participant:
            raise ConferenceError(
                ConferenceCode.TOO_MANY_TRACKS,
                f"at most {self._config.max_tracks_per_participant} tracks per participant",
            )
        track = TrackInfo(id=new_track_id(), participant=pid, kind=kind, source=source, name=name)
        p.tracks[track.id] = track
        if not p.hidden:
            self._broadcast(TrackPublished(room=self.name, track=track), exclude=pid)
        return track

    def check_new_tracks(self, pid: ParticipantId, count: int) -> None:
        """Raise ``too_many_tracks`` unless ``count`` more tracks fit (checked before an offer)."""
        p = self.require(pid)
        limit = self._config.max_tracks_per_participant
        if count and len(p.tracks) + count > limit:
            raise ConferenceError(ConferenceCode.TOO_MANY_TRACKS,
                                  f"at most {limit} tracks per participant")

    def remove_track(self, pid: ParticipantId, tid: TrackId) -> TrackInfo:
        """Unpublish: the others are told and forwarding stops at once."""
        p = self.require(pid)
        track = p.tracks.pop(tid, None)
        if track is None:
            raise ConferenceError(ConferenceCode.UNKNOWN_TRACK, f"no track {tid!r}")
        self.media.unpublish(pid, tid)
        if not p.hidden:
            self._broadcast(TrackUnpublished(room=self.name, track=track), exclude=pid)
        return track

    def track_ended(self, pid: ParticipantId, tid: TrackId) -> None:
        """The media saw a published track end (its connection or m-line went away)."""
        p = self._participants.get(pid)
        track = p.tracks.pop(tid, None) if p is not None else None
        if p is not None and track is not None and not p.hidden:
            self._broadcast(TrackUnpublished(room=self.name, track=track), exclude=pid)

    def stop_publishing(self, pid: ParticipantId) -> None:
        """Off the stage: forwarding stops, the publish connection closes, tracks go."""
        p = self.require(pid)
        self.media.stop_publishing(pid)
        for tid in list(p.tracks):
            self.remove_track(pid, tid)

    def set_track_muted(self, pid: ParticipantId, tid: TrackId, muted: bool) -> TrackInfo:
        """A track is muted or unmuted: forwarding pauses or resumes, the others are told
        (the publisher too when someone else did it: see moderation)."""
        track = self._update_track(pid, tid, exclude=pid, muted=muted)
        self.media.set_muted(pid, tid, track.muted)
        return track

    def set_track_stalled(self, pid: ParticipantId, tid: TrackId, stalled: bool) -> TrackInfo:
        """The SFU saw the track stop (or resume); everyone, the publisher too, is told."""
        return self._update_track(pid, tid, exclude=None, stalled=stalled)

    def _update_track(self, pid: ParticipantId, tid: TrackId, *,
                      exclude: ParticipantId | None, **changes: Any) -> TrackInfo:
        p = self.require(pid)
        track = p.tracks.get(tid)
        if track is None:
            raise ConferenceError(ConferenceCode.UNKNOWN_TRACK, f"no track {tid!r}")
        updated = replace(track, **changes)
        if updated != track:
            p.tracks[tid] = updated
            if not p.hidden:
                self._broadcast(TrackUpdated(room=self.name, track=updated), exclude=exclude)
        return updated

    # -- data --------------------------------------------------------------
    def send_data(
        self,
        pid: ParticipantId,
        payload: Any,
        *,
        topic: str = "",
        to: list[Identity] | None = None,
    ) -> int | None:
        """Relay app data; returns how many participants it was delivered to, or ``None``
        when the sender is over its data budget (the message is dropped and counted).

        Data from the socket and from the data channel both come here, so both draw on the
        one budget of the participant."""
        sender = self.require(pid)
        if not sender.grants.can_publish_data:
            raise ConferenceError(ConferenceCode.PERMISSION_DENIED, "no permission to send data")
        if sender.data_budget is not None and not sender.data_budget.take():
            if self._metrics is not None:
                self._metrics.data_dropped.inc()
            return None
        event = DataReceived(
            room=self.name,
            sender=sender.id,
            sender_identity=sender.identity,
            payload=payload,
            topic=topic,
        )
        wanted = set(to) if to is not None else None
        count = 0
        for p in list(self._participants.values()):
            if p.id == pid or (wanted is not None and p.identity not in wanted):
                continue
            p.deliver(event)
            count += 1
        return count

    # -- fan-out -------------------------------------------------------------
    def _broadcast(self, event: RoomEvent, exclude: ParticipantId | None = None) -> None:
        for p in list(self._participants.values()):
            if p.id != exclude:
                p.deliver(event)
