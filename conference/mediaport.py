"""The media port: what a Room asks of the SFU side, and the no-media version.

A Room calls its port itself, so each domain action (a track removed, a track
muted, a participant demoted or gone) is one call on the Room and reaches the
media exactly once. ``NoMedia`` serves nodes with ``sfu.enabled`` off: room
bookkeeping works, media requests are refused with ``media_disabled``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from conference.errors import ConferenceCode, ConferenceError
from conference.ids import ParticipantId, TrackId
from sfu.stats import ForwardingStats

if TYPE_CHECKING:
    from conference.participant import Participant


class MediaPort(Protocol):
    enabled: bool

    # -- called by the Room (domain actions) ---------------------------------
    def attach(self, participant: Participant) -> None:
        """A participant joined with media: give it a subscribe connection."""

    def detach(self, pid: ParticipantId) -> None:
        """A participant left: close its connections."""

    def unpublish(self, pid: ParticipantId, tid: TrackId) -> None:
        """The room removed a track: stop forwarding it. No-op if already gone."""

    def set_muted(self, pid: ParticipantId, tid: TrackId, muted: bool) -> None:
        """The room muted or unmuted a track: pause or resume forwarding."""

    def stop_publishing(self, pid: ParticipantId) -> None:
        """The participant left the stage: close its publish connection now."""

    async def close(self) -> None:
        """Close every connection. Idempotent."""

    # -- called by the edge (a participant's own media requests) --------------
    async def publish(self, pid: ParticipantId, sdp: str,
                      tracks: dict[str, dict[str, Any]]) -> tuple[str, list[TrackId]]:
        """Apply a publish offer; the answer and the ids of new tracks."""

    def mid_of(self, pid: ParticipantId, tid: TrackId) -> str | None:
        """The publish offer's mid that carries a track."""

    async def answer(self, pid: ParticipantId, sdp: str) -> None:
        """The participant's answer to a subscriber offer."""

    async def candidate(self, pid: ParticipantId, target: str,
                        candidate: dict[str, Any] | None) -> None:
        """A trickled ICE candidate for the publish or subscribe connection."""

    def set_subscription(self, pid: ParticipantId, tid: TrackId, state: str) -> None:
        """``subscribed`` | ``paused`` | ``unsubscribed`` for one track."""

    def set_track_size(self, pid: ParticipantId, tid: TrackId, width: int, height: int) -> None:
        """The size (device pixels) at which the participant shows a received video track;
        0x0: not shown. A track it does not receive is ignored."""

    # -- observation ------------------------------------------------------------
    def stats(self, pid: ParticipantId) -> dict[str, Any]:
        """Per-participant link statistics (the admin API)."""

    def counts(self) -> dict[str, int]:
        """Live producers, consumers and peer connections."""

    def forwarding_stats(self) -> ForwardingStats:
        """Cumulative forwarding counters of the room."""


def _disabled() -> ConferenceError:
    return ConferenceError(ConferenceCode.MEDIA_DISABLED, "media is off on this node")


class NoMedia:
    """The port of a signalling-only node: every media request is refused."""

    enabled = False

    def attach(self, participant: Participant) -> None:
        raise _disabled()

    def detach(self, pid: ParticipantId) -> None:
        pass

    def unpublish(self, pid: ParticipantId, tid: TrackId) -> None:
        pass

    def set_muted(self, pid: ParticipantId, tid: TrackId, muted: bool) -> None:
        pass

    def stop_publishing(self, pid: ParticipantId) -> None:
        pass

    async def close(self) -> None:
        pass

    async def publish(self, pid: ParticipantId, sdp: str,
                      tracks: dict[str, dict[str, Any]]) -> tuple[str, list[TrackId]]:
        raise _disabled()

    def mid_of(self, pid: ParticipantId, tid: TrackId) -> str | None:
        return None

    async def answer(self, pid: ParticipantId, sdp: str) -> None:
        raise _disabled()

    async def candidate(self, pid: ParticipantId, target: str,
                        candidate: dict[str, Any] | None) -> None:
        raise _disabled()

    def set_subscription(self, pid: ParticipantId, tid: TrackId, state: str) -> None:
        raise _disabled()

    def set_track_size(self, pid: ParticipantId, tid: TrackId, width: int, height: int) -> None:
        raise _disabled()

    def stats(self, pid: ParticipantId) -> dict[str, Any]:
        return {}

    def counts(self) -> dict[str, int]:
        return {"producers": 0, "consumers": 0, "peer_connections": 0}

    def forwarding_stats(self) -> ForwardingStats:
        return ForwardingStats()
