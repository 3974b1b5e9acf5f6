"""Moderator actions on other participants: mute a track, rename, remove.

Stage changes (approve, invite, demote) live in conference/stage.py. Each
action is checked against the acting participant's ``room_admin`` grant;
the admin HTTP API calls the same functions with ``moderator=None``.
"""

from __future__ import annotations

import logging

from conference.errors import ConferenceCode, ConferenceError
from conference.events import TrackInfo, TrackMuted
from conference.ids import ParticipantId, TrackId
from conference.room import Room

audit = logging.getLogger("parley.moderation")


def find_track(room: Room, tid: TrackId) -> tuple[ParticipantId, TrackInfo]:
    for p in room.participants:
        if tid in p.tracks:
            return p.id, p.tracks[tid]
    raise ConferenceError(ConferenceCode.UNKNOWN_TRACK, f"no track {tid!r}")


def set_track_muted(room: Room, moderator: ParticipantId | None, tid: TrackId,
                    muted: bool) -> TrackInfo:
    """Mute stops forwarding at once; unmute is the publisher's own choice unless the
    room's ``moderator_can_unmute`` option allows it."""
    room.require_moderator(moderator)
    owner, _ = find_track(room, tid)
    if not muted and owner != moderator and not room.options.moderator_can_unmute:
        raise ConferenceError(ConferenceCode.PERMISSION_DENIED,
                              "only the publisher may unmute this track")
    track = room.set_track_muted(owner, tid, muted)
    publisher = room.get(owner)
    if publisher is not None and owner != moderator:
        publisher.deliver(TrackMuted(room=room.name, track=track, by=moderator))
    audit.info("track %s", "muted" if muted else "unmuted",
               extra={"room": room.name, "track": tid, "participant": owner, "by": moderator})
    return track


def update_participant(room: Room, moderator: ParticipantId | None, pid: ParticipantId, *,
                       name: str | None, metadata: str | None) -> None:
    room.require_moderator(moderator)
    if room.get(pid) is None:
        raise ConferenceError(ConferenceCode.UNKNOWN_PARTICIPANT, "no such participant")
    room.update_participant(pid, name=name, metadata=metadata)
    audit.info("participant updated",
               extra={"room": room.name, "participant": pid, "by": moderator})
