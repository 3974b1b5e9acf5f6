"""RoomMedia: binds a Room to its SFU Router and decides who receives what.

The SFU sees ids and ``app_data`` only; this module turns its producers into
published tracks, subscribes every allowed participant to them, and turns
SFU callbacks (offers, stalls, active speakers, failures) into room events.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from conference.errors import ConferenceCode, ConferenceError
from conference.events import (
    ActiveSpeakers,
    ConnectionFailed,
    ConnectionQualityChanged,
    DataReceived,
    RoomEvent,
    StreamStateChanged,
    SubscriberOffer,
    TrackKind,
    TrackSource,
)
from conference.ids import Identity, ParticipantId, TrackId
from conference.metrics import ConferenceMetrics
from conference.participant import Participant
from conference.room import Room
from sfu.bandwidth import worst
from sfu.config import SfuConfig
from sfu.consumer import Consumer
from sfu.errors import SfuCode, SfuError
from sfu.linkstats import SubscriberLink
from sfu.producer import Producer
from sfu.router import Router, Speakers
from sfu.stats import ForwardingStats
from sfu.tasks import TaskSet
from sfu.transport import (
    Failure,
    PublishTransport,
    SubscribeTransport,
    read_client_description,
)

log = logging.getLogger("parley.media")

TARGETS = ("publisher", "subscriber")


@dataclass(kw_only=True)
class ParticipantMedia:
    participant: Participant
    subscriber: SubscribeTransport | None = None
    publisher: PublishTransport | None = None
    consumers: dict[TrackId, Consumer] = field(default_factory=dict)
    producers: dict[TrackId, Producer] = field(default_factory=dict)
    quality: str | None = None
    stream_states: dict[TrackId, tuple[str, int | None, str | None]] = field(default_factory=dict)
    track_sizes: dict[TrackId, tuple[int, int]] = field(default_factory=dict)
    """Size each received video is shown at (``track-size``), while it is received."""


class RoomMedia:
    """One per room, created by the Room (its media port); owns the Router and the
    tasks that close transports. ``close()`` is idempotent."""

    enabled = True

    def __init__(self, room: Room, config: SfuConfig,
                 metrics: ConferenceMetrics | None = None) -> None:
        self.room = room
        self.config = config
        self._metrics = metrics
        self.router = Router(config, on_active_speakers=self._speakers)
        self.router.on_links = self._links
        self.members: dict[ParticipantId, ParticipantMedia] = {}
        self._tasks = TaskSet("room-media")
        self.closed = False

    # -- membership ------------------------------------------------------------
    def attach(self, participant: Participant) -> None:
        """Give a joined participant a subscribe connection with every track it may receive."""
        if participant.id in self.members or self.closed:
            return
        member = ParticipantMedia(participant=participant)
        self.members[participant.id] = member
        known = tuple((m.participant.id, m.quality) for m in self.members.values()
                      if m.quality is not None and not m.participant.hidden)
        if known:  # a late joiner learns everyone's current quality at once
            participant.deliver(ConnectionQualityChanged(room=self.room.name, updates=known))
        if participant.grants.can_subscribe:
            live = {tid for m in self.members.values() for tid in m.producers}
            participant.subscriptions = {
                tid: state for tid, state in participant.subscriptions.items() if tid in live}
        self._open_subscriber(member)

    def _open_subscriber(self, member: ParticipantMedia) -> None:
        """A new subscribe connection carrying every track the participant receives
        (its paused and unsubscribed choices kept)."""
        participant = member.participant
        pid = participant.id
        transport = self.router.create_subscribe_transport(
            {"participant": pid},
            on_offer=lambda sdp, tracks: self._deliver(
                pid, SubscriberOffer(room=self.room.name, sdp=sdp, tracks=tracks)),
            on_data=lambda text: self._data_from(pid, text),
        )
        transport.on_failed = lambda reason: self._failed(pid, transport, reason)
        member.subscriber = transport

        def over_channel(event: DataReceived) -> bool:
            return transport.send_data(json.dumps({
                "from": event.sender, "identity": event.sender_identity,
                "topic": event.topic, "payload": event.payload}))

        participant.set_data_route(over_channel)
        if not participant.grants.can_subscribe:
            return
        wanted = participant.subscriptions
        for other in self.members.values():
            for tid, producer in other.producers.items():
                if other.participant.id != pid and wanted.get(tid) != "unsubscribed":
                    self._consume(member, tid, producer)
                    if wanted.get(tid) == "paused":
                        member.consumers[tid].pause()

    def detach(self, pid: ParticipantId) -> None:
        """The participant left: close its connections (in a task this object owns)."""
        member = self.members.pop(pid, None)
        if member is not None:
            member.participant.set_data_route(None)
            self._tasks.spawn(self._close_member(member))

    async def _close_member(self, member: ParticipantMedia) -> None:
        for transport in (member.publisher, member.subscriber):
            if transport is not None:
                await self.router.close_transport(transport)

    # -- publishing ------------------------------------------------------------
    async def publish(self, pid: ParticipantId, sdp: str,
                      tracks: dict[str, dict[str, Any]]) -> tuple[str, list[TrackId]]:
        """Apply a publish offer; returns the answer and the ids of new tracks.

        A participant that may not publish (no ``can_publish``, or hidden) gets no
        publish connection at all, whatever its offer says; the offer is read once,
        by the SFU, and that reading decides both the checks here and the answer.
        """
        member = self._member(pid)
        may_publish = self._may_publish(member.participant)
        if not may_publish:
            raise ConferenceError(ConferenceCode.PERMISSION_DENIED,
                                  "hidden participants receive media but do not publish"
                                  if member.participant.grants.hidden
                                  else "no permission to publish")
        offer = await read_client_description(sdp, self.config)
        sending = offer.sending
        if self.members.get(pid) is not member or not self._may_publish(member.participant):
            raise ConferenceError(ConferenceCode.PERMISSION_DENIED, "no permission to publish")
        if member.publisher is not None:
            member.publisher.check_failed()  # one that ended unnoticed goes now
        if member.publisher is not None and member.publisher.from_another_peer(offer):
            # The client's new peer connection replaces this one, once the offer passes
            # the checks that need no peer connection (its tracks then end, freeing room).
            member.publisher.check_offer(offer)
            self.room.check_new_tracks(pid, len(sending) - len(member.producers))
            self._end_publisher(member)
        known = set(member.publisher.producers) if member.publisher is not None else set()
        self.room.check_new_tracks(pid, sum(1 for s in sending if s.mid not in known))
        if member.publisher is None:
            transport = member.publisher = self.router.create_publish_transport(
                {"participant": pid}, on_producer=lambda p: self._produced(pid, p),
                may_publish=may_publish)
            transport.on_failed = lambda reason: self._failed(pid, transport, reason)
        before = set(member.producers)
        answer = await member.publisher.handle_offer(offer, tracks)
        return answer, [t for t in member.producers if t not in before]

    @staticmethod
    def _may_publish(participant: Participant) -> bool:
        return participant.grants.can_publish and not participant.grants.hidden

    def _produced(self, pid: ParticipantId, producer: Producer) -> None:
        member = self.members.get(pid)
        meta = producer.app_data
        kind = TrackKind(producer.kind)
        try:
            source = TrackSource(meta.get("source") or (
                TrackSource.MICROPHONE if kind is TrackKind.AUDIO else TrackSource.CAMERA))
        except ValueError:
            source = TrackSource.UNKNOWN
        if member is None or not self._may_publish(member.participant):
            self._tasks.spawn(producer.close())  # never forwarded
            return
        try:
            track = self.room.add_track(pid, kind=kind, source=source,
                                        name=str(meta.get("name", ""))[:256])
        except ConferenceError as err:
            log.info("track refused", extra={"participant": pid, "code": err.code.value})
            self._tasks.spawn(producer.close())
            return
        producer.app_data["track"] = track.id
        member.producers[track.id] = producer
        producer.on_stalled = lambda p, stalled: self._stalled(pid, track.id, stalled)
        producer.add_close_listener(lambda p: self._unproduced(pid, track.id))
        for other in self.members.values():
            if other.participant.id != pid and other.participant.grants.can_subscribe:
                self._consume(other, track.id, producer)

    def _unproduced(self, pid: ParticipantId, tid: TrackId) -> None:
        """A producer closed: if the room did not ask for it, the track ended."""
        member = self.members.get(pid)
        if member is not None and member.producers.pop(tid, None) is not None:
            self.room.track_ended(pid, tid)

    def _stalled(self, pid: ParticipantId, tid: TrackId, stalled: bool) -> None:
        p = self.room.get(pid)
        if p is not None and tid in p.tracks:  # unpublished: its producer is closing
            self.room.set_track_stalled(pid, tid, stalled)

    def unpublish(self, pid: ParticipantId, tid: TrackId) -> None:
        """Close one producer (its track was already removed from the room)."""
        member = self.members.get(pid)
        producer = member.producers.pop(tid, None) if member else None
        if producer is not None:
            producer.paused = True
            self._tasks.spawn(producer.close())

    def stop_publishing(self, pid: ParticipantId) -> None:
        """Stop forwarding this participant's media now and close its publish connection."""
        member = self.members.get(pid)
        if member is None or member.publisher is None:
            return
        transport, member.publisher = member.publisher, None
        for producer in list(member.producers.values()):
            producer.paused = True  # nothing more reaches anyone, even before the close
        member.producers.clear()
        self._tasks.spawn(self.router.close_transport(transport))

    def mid_of(self, pid: ParticipantId, tid: TrackId) -> str | None:
        member = self.members.get(pid)
        producer = member.producers.get(tid) if member else None
        return str(producer.app_data.get("mid")) if producer else None

    def set_muted(self, pid: ParticipantId, tid: TrackId, muted: bool) -> None:
        member = self.members.get(pid)
        producer = member.producers.get(tid) if member else None
        if producer is not None:
            producer.set_paused(muted)

    # -- subscribing -----------------------------------------------------------
    def _consume(self, member: ParticipantMedia, tid: TrackId, producer: Producer) -> None:
        if member.subscriber is not None:
            member.subscriber.check_failed()  # one that ended unnoticed is replaced first
        if member.subscriber is None or tid in member.consumers:
            return
        try:
            consumer = member.subscriber.consume(producer, {
                "track": tid, "participant": producer.app_data.get("participant"),
                "kind": producer.kind})
        except SfuError as err:  # its connection is gone: the others still get the track
            if err.code is not SfuCode.CLOSED:
                raise
            return  # noticing the end replaced the connection (see _failed), track included
        member.consumers[tid] = consumer
        previous = consumer.on_close

        def closed(c: Consumer) -> None:
            if member.consumers.get(tid) is c:
                del member.consumers[tid]
                member.track_sizes.pop(tid, None)
            if previous is not None:
                previous(c)

        consumer.on_close = closed

    def set_subscription(self, pid: ParticipantId, tid: TrackId, state: str) -> None:
        """``subscribed`` | ``paused`` | ``unsubscribed`` for one track."""
        member = self._member(pid)
        if not member.participant.grants.can_subscribe:
            raise ConferenceError(ConferenceCode.PERMISSION_DENIED, "no permission to subscribe")
        producer = next((m.producers[tid] for m in self.members.values()
                         if tid in m.producers), None)
        if producer is None:
            raise ConferenceError(ConferenceCode.UNKNOWN_TRACK, f"no track {tid!r}")
        if tid in member.producers:
            raise ConferenceError(ConferenceCode.PERMISSION_DENIED,
                                  "a participant does not subscribe to its own track")
        consumer = member.consumers.get(tid)
        if state == "subscribed":
            member.participant.subscriptions.pop(tid, None)
        else:  # kept across a resume
            member.participant.subscriptions[tid] = state
        if state == "unsubscribed":
            if consumer is not None:
                consumer.close()
        elif consumer is None:
            self._consume(member, tid, producer)
            if state == "paused":
                member.consumers[tid].pause()
        elif state == "paused":
            consumer.pause()
        else:
            consumer.resume()

    def set_track_size(self, pid: ParticipantId, tid: TrackId, width: int, height: int) -> None:
        """Kept for the subscription's consumer (the layer allocator's input); a track the
        participant does not receive (any more) is ignored: tiles resize while tracks go."""
        member = self._member(pid)
        consumer = member.consumers.get(tid)
        if consumer is None or consumer.kind != "video":
            return
        member.track_sizes[tid] = (width, height)
        consumer.render_size = (width, height)

    async def answer(self, pid: ParticipantId, sdp: str) -> None:
        member = self._member(pid)
        if member.subscriber is None:
            raise SfuError(SfuCode.UNKNOWN_CONNECTION, "no subscribe connection")
        await member.subscriber.set_answer(sdp)

    async def candidate(self, pid: ParticipantId, target: str,
                        candidate: dict[str, Any] | None) -> None:
        member = self._member(pid)
        transport = member.publisher if target == "publisher" else \
            member.subscriber if target == "subscriber" else None
        if transport is None:
            raise SfuError(SfuCode.UNKNOWN_CONNECTION, f"no {target!r} connection")
        await transport.add_candidate(candidate)

    # -- events ----------------------------------------------------------------
    def _member(self, pid: ParticipantId) -> ParticipantMedia:
        member = self.members.get(pid)
        if member is None:
            raise ConferenceError(ConferenceCode.NOT_IN_ROOM, "no media session; join with media")
        return member

    def _deliver(self, pid: ParticipantId, event: RoomEvent) -> None:
        participant = self.room.get(pid)
        if participant is not None:
            participant.deliver(event)

    def _data_from(self, pid: ParticipantId, text: str) -> None:
        try:
            message = json.loads(text)
            payload = message["payload"]
            to = message.get("to")
            topic = str(message.get("topic", ""))[:128]
            targets = [Identity(str(i)) for i in to] if isinstance(to, list) else None
            self.room.send_data(pid, payload, topic=topic, to=targets)
        except (ValueError, KeyError, TypeError) as exc:
            log.info("bad data-channel message", extra={"participant": pid, "error": str(exc)})
        except ConferenceError as err:
            log.info("data refused", extra={"participant": pid, "code": err.code.value})

    def _speakers(self, speakers: Speakers) -> None:
        event = ActiveSpeakers(room=self.room.name, speakers=tuple(
            (ParticipantId(str(app.get("participant"))), level) for app, level in speakers))
        for p in self.room.participants:
            p.deliver(event)

    def _links(self, links: list[tuple[SubscribeTransport, SubscriberLink]]) -> None:
        """After each bandwidth update: metrics, connection quality, stream states."""
        changed: list[tuple[ParticipantId, str]] = []
        for transport, link in links:
            member = self.members.get(ParticipantId(str(transport.app_data.get("participant"))))
            if member is None:
                continue
            self._observe(link)
            quality = worst([link.quality] + [p.link.quality for p in member.producers.values()
                                              if p.kind == "video"])
            if quality.value != member.quality:
                member.quality = quality.value
                if not member.participant.hidden:
                    changed.append((member.participant.id, member.quality))
            for tid, consumer in member.consumers.items():
                if consumer.kind != "video":
                    continue
                state = ("paused_bandwidth", None, None) if consumer.bandwidth_paused \
                    else ("active", consumer.target_layer, self._encoding(consumer))
                if member.stream_states.get(tid) != state:
                    member.stream_states[tid] = state
                    member.participant.deliver(StreamStateChanged(
                        room=self.room.name, track=tid, state=state[0], layer=state[1],
                        encoding=state[2]))
        if self._metrics is not None:
            for producer in self.router.producers.values():
                if producer.kind == "video":
                    self._metrics.publisher_bitrate.observe(producer.link.bitrate)
        if changed:
            event = ConnectionQualityChanged(room=self.room.name, updates=tuple(changed))
            for p in self.room.participants:
                p.deliver(event)

    def _encoding(self, consumer: Consumer) -> str | None:
        """The RID of the simulcast encoding ``consumer`` is on, if it is on one."""
        current = consumer.switch.current if consumer.switch is not None else None
        producer = self.router.producers.get(consumer.producer_id)
        if current is None or producer is None or current >= len(producer.layers):
            return None
        return producer.layers[current].rid

    def _observe(self, link: SubscriberLink) -> None:
        if self._metrics is None:
            return
        self._metrics.subscriber_loss.observe(link.estimator.loss)
        self._metrics.subscriber_estimate.observe(link.estimator.estimate)
        if link.rtt is not None:
            self._metrics.subscriber_rtt.observe(link.rtt)

    def stats(self, pid: ParticipantId) -> dict[str, Any]:
        """Per-participant link statistics for the admin API."""
        member = self.members.get(pid)
        if member is None:
            return {}
        out: dict[str, Any] = {"quality": member.quality}
        if member.subscriber is not None:
            out["subscriber"] = member.subscriber.link.snapshot()
        out["published"] = {
            tid: {"kind": p.kind, "bitrate": int(p.link.bitrate), "remb_target": p.link.target,
                  "frames_in": p.frames_in, "stalled": p.stalled}
            | ({"layers": p.layer_info()} if p.layers else {})
            for tid, p in member.producers.items()}
        received = {tid: {"layer": c.switch.current, "target": c.switch.target,
                          "tile": list(c.render_size) if c.render_size else None}
                    for tid, c in member.consumers.items() if c.switch is not None}
        if received:
            out["received"] = received
        return out

    def _failed(self, pid: ParticipantId, transport: PublishTransport | SubscribeTransport,
                reason: Failure) -> None:
        """A connection ended by itself: close it, tell the participant, and for a
        subscribe connection open the next one at once (publishing waits for the
        client's next offer)."""
        member = self.members.get(pid)
        if member is None or self.closed:
            return
        if transport is member.publisher:
            self._end_publisher(member)
            target = "publisher"
        elif transport is member.subscriber:
            member.subscriber = None
            member.participant.set_data_route(None)
            member.consumers.clear()  # closed with their transport
            member.stream_states.clear()
            self._tasks.spawn(self.router.close_transport(transport))
            target = "subscriber"
        else:
            return
        log.info("media connection failed", extra={"participant": pid, "target": target,
                                                    "reason": reason.value})
        if self._metrics is not None:
            self._metrics.media_failures.labels(target=target, reason=reason.value).inc()
        self._deliver(pid, ConnectionFailed(room=self.room.name, target=target,
                                            reason=reason.value))
        if target == "subscriber":
            self._open_subscriber(member)  # its offer follows the event

    def _end_publisher(self, member: ParticipantMedia) -> None:
        """Close the publish connection; its tracks end for everyone now, so that the
        client's next offer publishes them anew."""
        transport, member.publisher = member.publisher, None
        pid = member.participant.id
        for tid, producer in list(member.producers.items()):
            producer.paused = True
            del member.producers[tid]
            self.room.track_ended(pid, tid)
        if transport is not None:
            self._tasks.spawn(self.router.close_transport(transport))

    def counts(self) -> dict[str, int]:
        c = self.router.counts()
        return {"producers": c.producers, "consumers": c.consumers,
                "peer_connections": c.peer_connections}

    def forwarding_stats(self) -> ForwardingStats:
        return self.router.stats

    async def close(self) -> None:
        """Close every connection and the router. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.members.clear()
        await self.router.close()
        await self._tasks.wait()
