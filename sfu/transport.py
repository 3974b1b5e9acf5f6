"""Transports: one aiortc peer connection per participant and direction.

- :class:`PublishTransport`: the client offers, the SFU answers; each
  incoming track becomes a Producer.
- :class:`SubscribeTransport`: the SFU offers whenever its consumers change,
  the client answers; one offer in flight at a time (no glare), changes made
  meanwhile are folded into the next offer. Its transceivers are slots that
  are reused, so m-lines are never removed; the SFU is always the offerer on
  this connection, which keeps payload types and extension ids stable.

``close()`` on either closes its producers or consumers, then the peer
connection; it is idempotent.

A connection that ends without its owner closing it (ICE or DTLS failed, consent
expired, the client closed its end) is reported once through ``on_failed`` with a
:class:`Failure`; the transport accepts nothing more and waits for its owner to
close it. aiortc has no ICE restart, so the owner replaces it with a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp

from sfu.config import SfuConfig
from sfu.consumer import Consumer, SlotTrack
from sfu.errors import SfuCode, SfuError
from sfu.fastpath import Outbound
from sfu.hooks import (
    ForwardPacker,
    drop_bitrate_estimator,
    install_packer,
    mark_sctp_bundled,
    redirect_keyframe_requests,
    tap_sender_rtcp,
)
from sfu.hooks_consent import ConsentPolicy, consent_lost, keep_consent_fresh
from sfu.hooks_ice import close_late_candidates
from sfu.hooks_simulcast import accept_rid_extensions
from sfu.layerswitch import LayerSwitch
from sfu.linkstats import SubscriberLink
from sfu.producer import Producer
from sfu.sdp import (
    FORWARDED,
    Description,
    count_media_sections,
    ice_ufrag,
    read_description,
)
from sfu.simulcast import SimulcastOffer, answer_simulcast
from sfu.stats import ForwardingStats
from sfu.udpmux import use_node_media

log = logging.getLogger("parley.sfu.transport")
_ids = itertools.count(1)

DATA_CHANNEL_LABEL = "parley"


class Failure(StrEnum):
    """Why a connection ended without its owner closing it (``connection-failed``'s
    ``reason``)."""

    CONSENT_EXPIRED = "consent_expired"
    """No consent check answered for ``sfu.consent_timeout`` seconds."""
    ICE_FAILED = "ice_failed"
    """ICE found no working path, or lost it."""
    DTLS_FAILED = "dtls_failed"
    """The DTLS handshake or the DTLS session failed."""
    CLOSED = "closed"
    """The client closed its end (DTLS close_notify)."""


def _new_pc(config: SfuConfig | None = None) -> RTCPeerConnection:
    # One ICE/DTLS transport per connection: m-lines added by a re-offer join it
    # instead of needing a new ICE negotiation.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[],
                                            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    use_node_media(pc)  # the node's one UDP port and announced address, when set
    close_late_candidates()  # a close while it gathers leaves no socket open
    # Retransmitted consent checks, lost after sfu.consent_timeout (RFC 7675).
    keep_consent_fresh(pc, ConsentPolicy.for_window((config or SfuConfig()).consent_timeout))
    return pc


def _dtls_transports(pc: RTCPeerConnection) -> list[Any]:
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    return [t for t in transports if t is not None]


def failure_of(pc: RTCPeerConnection) -> Failure | None:
    """Why ``pc`` is over (its connection or ICE state ``failed`` or ``closed``), or
    None while it lives."""
    if pc.connectionState not in ("failed", "closed") and \
            pc.iceConnectionState not in ("failed", "closed"):
        return None
    dtls = _dtls_transports(pc)
    if consent_lost(pc):
        return Failure.CONSENT_EXPIRED
    if any(t.state == "failed" for t in dtls):
        return Failure.DTLS_FAILED
    if any(t.transport.state == "failed" for t in dtls):
        return Failure.ICE_FAILED
    return Failure.CLOSED


async def close_peer_connection(pc: RTCPeerConnection) -> None:
    """``pc.close()``, also for a connection a refused offer left half-built, or one
    closed while it was connecting.

    aiortc's ``close`` stops every transceiver's transport in turn and fails on a
    transceiver left without one (``AttributeError``); the transports after it
    would keep their sockets. Those are stopped here (each ``stop`` is idempotent).
    And it stops the senders and receivers before the transports: when a DTLS
    handshake ends in between, aiortc's connect task starts that transceiver's sender
    or receiver after it was stopped, and nothing stops it again (its RTCP task and
    decoder thread would run for the life of the process, holding the connection).
    Once the transports are closed nothing else can start: each is stopped again here.
    """
    try:
        await pc.close()
    except AttributeError:
        for dtls in _dtls_transports(pc):
            await dtls.stop()
            await dtls.transport.stop()
    for transceiver in pc.getTransceivers():
        await transceiver.sender.stop()
        await transceiver.receiver.stop()


async def read_client_description(sdp: str, config: SfuConfig, *,
                                   max_sections: int | None = None,
                                   offer: bool = True) -> Description:
    """:func:`sfu.sdp.read_description` with the node's limits and candidate filter, run in
    a worker thread: however hostile the text, the event loop keeps its turns.

    ``max_sections``: m-lines allowed (default: ``config.max_media_sections``)."""
    return await asyncio.to_thread(
        read_description, sdp, codecs=offer, candidates=config.candidate_filter.allows,
        max_sections=config.max_media_sections if max_sections is None else max_sections)


async def _add_candidate(ice_transport: Any, candidate: dict[str, Any] | None,
                         config: SfuConfig) -> None:
    if candidate is None or not candidate.get("candidate"):
        return  # end of candidates
    try:
        text = str(candidate["candidate"])
        ice = candidate_from_sdp(text.split(":", 1)[1] if text.startswith("candidate:") else text)
        ice.sdpMid = candidate.get("sdpMid")
        ice.sdpMLineIndex = candidate.get("sdpMLineIndex")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError,
            AssertionError) as exc:  # aiortc's candidate_from_sdp asserts on short lines
        raise SfuError(SfuCode.INVALID_CANDIDATE, f"cannot use candidate: {exc}") from exc
    if ice_transport is None:
        raise SfuError(SfuCode.UNKNOWN_CONNECTION, "the connection has no description yet")
    if not config.candidate_filter.allows(str(ice.ip)):
        log.debug("remote candidate dropped by the filter", extra={"address": str(ice.ip)})
        return
    try:
        await ice_transport.addRemoteCandidate(ice)
    except (ValueError, TypeError) as exc:
        raise SfuError(SfuCode.INVALID_CANDIDATE, f"cannot use candidate: {exc}") from exc


async def _settle(pc: RTCPeerConnection, timeout: float = 10.0) -> None:
    """Wait until the first connection attempt has finished.

    aiortc starts senders and receivers only from the connect step that runs
    after each remote description; a second description applied while the
    first DTLS handshake is still running leaves the new m-lines unstarted.
    So the next negotiation waits for the first connect to settle.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while pc.connectionState in ("new", "connecting"):
        if asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.02)


class _Transport:
    def __init__(self, config: SfuConfig, app_data: dict[str, Any]) -> None:
        self.id = f"T{next(_ids)}"
        self.config = config
        self.app_data = app_data
        self.closed = False
        self.failure: Failure | None = None
        """Set once when the connection ends by itself; ``on_failed`` is then called."""
        self.on_failed: Callable[[Failure], None] | None = None
        self.pc = self._create_pc()

    def _create_pc(self) -> RTCPeerConnection:
        pc = _new_pc(self.config)

        def changed() -> None:
            if pc is self.pc:
                self.check_failed()

        pc.on("connectionstatechange", changed)
        pc.on("iceconnectionstatechange", changed)
        return pc

    def check_failed(self) -> Failure | None:
        """Notice (once) that the peer connection ended without :meth:`close`: record
        why and call ``on_failed``. Returns the failure, if any."""
        if self.closed or self.failure is not None:
            return self.failure
        failure = failure_of(self.pc)
        if failure is not None:
            self.failure = failure
            log.info("media connection ended", extra={"transport": self.id,
                                                      "reason": failure.value})
            if self.on_failed is not None:
                self.on_failed(failure)
        return failure

    @property
    def connection_state(self) -> str:
        return str(self.pc.connectionState)

    def _check_usable(self) -> None:
        if self.closed:
            raise SfuError(SfuCode.CLOSED, "connection closed")
        if self.check_failed() is not None:
            raise SfuError(SfuCode.CLOSED, f"connection ended ({self.failure})")

    async def add_candidate(self, candidate: dict[str, Any] | None) -> None:
        self._check_usable()
        await _add_candidate(self._ice_transport(), candidate, self.config)

    def _ice_transport(self) -> Any:
        """The connection's one ICE transport (max-bundle): candidates go straight to it,
        whatever m-line they name (aiortc's addIceCandidate skips bundled m-lines)."""
        raise NotImplementedError


class PublishTransport(_Transport):
    """``may_publish`` false (a listener, a hidden participant): every offer with a
    sending section is refused and no track ever becomes a Producer."""

    def __init__(self, config: SfuConfig, app_data: dict[str, Any],
                 on_producer: Callable[[Producer], None], *, may_publish: bool) -> None:
        super().__init__(config, app_data)
        self.may_publish = may_publish
        self.producers: dict[str, Producer] = {}
        """By mid."""
        self._on_producer = on_producer

    def _create_pc(self) -> RTCPeerConnection:
        pc = super()._create_pc()
        self._pending: list[Any] = []

        @pc.on("track")
        def _track(track: Any) -> None:
            if pc is self.pc:
                self._pending.append(track)

        return pc

    async def handle_offer(self, offer: Description | str,
                           track_meta: dict[str, dict[str, Any]]) -> str:
        """Apply the client's offer; returns the answer SDP.

        ``offer``: read by :func:`read_client_description` (text is read here).
        ``track_meta`` maps mid → app data for new producers. Sections that
        stopped sending close their producers.
        """
        self._check_usable()
        if isinstance(offer, str):
            offer = await read_client_description(offer, self.config)
        self.check_offer(offer)
        sending = offer.sending
        if self.pc.remoteDescription is not None:
            await _settle(self.pc)
        simulcast = {s.mid: s.simulcast for s in sending
                     if s.mid is not None and s.simulcast is not None}
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
            for transceiver in self.pc.getTransceivers():
                if transceiver.mid in simulcast:
                    accept_rid_extensions(transceiver, simulcast[str(transceiver.mid)])
            answer = await self.pc.createAnswer()
            await self.pc.setLocalDescription(answer)
        except Exception as exc:  # aiortc raises Value/Type errors, InvalidState/AccessError
            await self._restart()
            raise SfuError(SfuCode.INVALID_SDP, f"offer rejected: {exc}") from exc
        if self.closed:  # while the answer gathered: no producer may outlive close()
            raise SfuError(SfuCode.CLOSED, "connection closed while its offer was answered")
        sending_mids = {s.mid for s in sending}
        for mid, producer in list(self.producers.items()):
            if mid not in sending_mids:
                del self.producers[mid]
                await producer.close()
        for transceiver in self._bind_tracks(track_meta, simulcast):
            await transceiver.stop()  # never read, never forwarded
        return answer_simulcast(str(self.pc.localDescription.sdp), simulcast)

    def check_offer(self, offer: Description) -> None:
        """Raise unless this connection may take what ``offer`` sends (permission, the
        per-connection track cap); nothing is changed."""
        if offer.sending and not self.may_publish:
            raise SfuError(SfuCode.PERMISSION_DENIED, "this connection may not send media")
        if len(offer.sending) > self.config.max_tracks_per_connection:
            raise SfuError(SfuCode.TOO_MANY_TRACKS,
                           f"at most {self.config.max_tracks_per_connection} tracks per "
                           "connection")

    async def _restart(self) -> None:
        """Replace the peer connection after an offer aiortc refused.

        aiortc has no rollback: before its ``setRemoteDescription`` or ``createAnswer``
        fails it may already have created transceivers, moved them onto a bundle
        transport (or none), and scheduled its connect task. Which refusals leave the
        connection intact cannot be told from outside, so none is trusted: the
        connection's producers and peer connection are closed, and the next offer
        (from a new client peer connection: ICE credentials and fingerprint change)
        meets a fresh one. The SDP reader refuses every description it knows aiortc
        mishandles, so this is the last line, not a path browsers take.
        """
        old, self.pc = self.pc, self._create_pc()
        log.warning("offer refused by aiortc: publish connection restarted",
                    extra={"transport": self.id})
        for producer in list(self.producers.values()):
            await producer.close()
        self.producers.clear()
        await close_peer_connection(old)

    def from_another_peer(self, offer: Description) -> bool:
        """Whether ``offer`` has other ICE credentials than the connection's last one: a
        new client peer connection (or an ICE restart, which aiortc cannot do)."""
        remote = self.pc.remoteDescription
        return remote is not None and ice_ufrag(str(remote.sdp)) != ice_ufrag(offer.sdp)

    def _ice_transport(self) -> Any:
        transceivers = self.pc.getTransceivers()
        dtls = transceivers[0].receiver.transport if transceivers else None
        return dtls.transport if dtls is not None else None

    def _bind_tracks(self, track_meta: dict[str, dict[str, Any]],
                     simulcast: dict[str, SimulcastOffer]) -> list[RTCRtpTransceiver]:
        """New tracks become producers; returns the transceivers of tracks refused
        (no permission, or over the per-connection cap: the checks above make both
        unreachable, this is the last line)."""
        pending, self._pending = self._pending, []
        by_track = {id(t.receiver.track): t for t in self.pc.getTransceivers()}
        refused = []
        for track in pending:
            transceiver: RTCRtpTransceiver | None = by_track.get(id(track))
            if transceiver is None or transceiver.mid is None:
                continue
            if not self.may_publish or \
                    len(self.producers) >= self.config.max_tracks_per_connection:
                log.warning("track refused", extra={"transport": self.id})
                refused.append(transceiver)
                continue
            mid = str(transceiver.mid)
            producer = Producer(
                producer_id=f"{self.id}:{mid}", kind=track.kind,
                receiver=transceiver.receiver, config=self.config,
                app_data={**self.app_data, **track_meta.get(mid, {}), "mid": mid},
                simulcast=simulcast.get(mid) if track.kind == "video" else None)
            self.producers[mid] = producer
            self._on_producer(producer)
        return refused

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            for producer in list(self.producers.values()):
                await producer.close()
        finally:  # a producer that fails to close must not keep the connection open
            self.producers.clear()
            await close_peer_connection(self.pc)


class _Slot:
    def __init__(self, transceiver: RTCRtpTransceiver, track: SlotTrack,
                 packer: ForwardPacker | Outbound | None) -> None:
        self.transceiver = transceiver
        self.track = track
        self.packer = packer
        self.consumer: Consumer | None = None


class SubscribeTransport(_Transport):
    def __init__(self, config: SfuConfig, app_data: dict[str, Any],
                 on_offer: Callable[[str, dict[str, dict[str, Any]]], None],
                 on_data: Callable[[str], None] | None = None,
                 stats: ForwardingStats | None = None) -> None:
        super().__init__(config, app_data)
        self._stats = stats or ForwardingStats()
        self.link = SubscriberLink.create(config.bandwidth)
        self._on_offer = on_offer
        self._on_data = on_data
        self._slots: list[_Slot] = []
        self.consumers: dict[str, Consumer] = {}
        self._dirty = asyncio.Event()
        self._answered = asyncio.Event()
        self._awaiting_answer = False
        self.offers_sent = 0
        self.channel: RTCDataChannel = self.pc.createDataChannel(DATA_CHANNEL_LABEL)
        mark_sctp_bundled(self.pc)

        @self.channel.on("message")
        def _message(message: Any) -> None:
            if self._on_data is not None and isinstance(message, str):
                self._on_data(message)

        self._dirty.set()
        self._task = asyncio.get_running_loop().create_task(
            self._negotiate_loop(), name=f"negotiate-{self.id}")

    # -- consumers --------------------------------------------------------------
    def consume(self, producer: Producer, app_data: dict[str, Any]) -> Consumer:
        self._check_usable()
        slot = next((s for s in self._slots
                     if s.consumer is None and s.track.kind == producer.kind), None)
        if slot is None:
            slot = self._new_slot(producer.kind)
        switch = LayerSwitch(layers=len(producer.layers),
                             request_keyframe=producer.request_keyframe) \
            if producer.layers else None
        consumer = Consumer(consumer_id=f"{self.id}:{producer.id}", producer_id=producer.id,
                            kind=producer.kind, slot=slot.track, app_data=app_data,
                            request_keyframe=switch.request_keyframe if switch is not None
                            else producer.request_keyframe,
                            release=producer.remove_consumer)
        consumer.switch = switch
        producer.add_consumer(consumer)
        slot.consumer = consumer
        consumer.on_close = self._consumer_closed
        consumer.link = self.link
        slot.transceiver.direction = "sendonly"
        self.consumers[consumer.id] = consumer
        self._dirty.set()
        return consumer

    def _new_slot(self, kind: str) -> _Slot:
        track = SlotTrack(kind, self.config.consumer_queue, self._stats)
        transceiver = self.pc.addTransceiver(track, direction="sendonly")
        drop_bitrate_estimator(transceiver.receiver)
        caps = RTCRtpSender.getCapabilities(kind)
        wanted = [c for c in caps.codecs
                  if c.mimeType.split("/")[1].lower() in (*FORWARDED[kind], "rtx")]
        transceiver.setCodecPreferences(wanted)
        packer: ForwardPacker | Outbound | None = None
        if self.config.transcode:
            tap_sender_rtcp(transceiver.sender, self.link.on_report)
        elif self.config.fast_path:
            packer = track.outbound = Outbound(
                transceiver.sender, kind, self._stats,
                on_keyframe_request=track.on_keyframe_request, on_report=self.link.on_report,
                native=self.config.native_loop)
        else:
            redirect_keyframe_requests(transceiver.sender, track.on_keyframe_request)
            packer = install_packer(transceiver.sender, kind, self._stats)
            tap_sender_rtcp(transceiver.sender, self.link.on_report)
        slot = _Slot(transceiver, track, packer)
        self._slots.append(slot)
        return slot

    def _consumer_closed(self, consumer: Consumer) -> None:
        self.consumers.pop(consumer.id, None)
        for slot in self._slots:
            if slot.consumer is consumer:
                slot.consumer = None
                slot.transceiver.direction = "inactive"
        if not self.closed and self.failure is None:
            self._dirty.set()

    def _ice_transport(self) -> Any:
        return self.channel.transport.transport.transport

    def bytes_sent(self) -> int:
        return sum(slot.packer.bytes_sent for slot in self._slots if slot.packer is not None)

    def remb(self) -> int | None:
        """The subscriber's own estimate (REMB), when it sends one."""
        values = [slot.packer.target_bitrate for slot in self._slots
                  if slot.packer is not None and slot.packer.target_bitrate is not None]
        return max(values) if values else None

    def mapping(self) -> dict[str, dict[str, Any]]:
        """mid → app data of the consumer it carries (sent with each offer)."""
        out: dict[str, dict[str, Any]] = {}
        for slot in self._slots:
            if slot.consumer is not None and slot.transceiver.mid is not None:
                out[str(slot.transceiver.mid)] = slot.consumer.app_data
        return out

    # -- negotiation ------------------------------------------------------------
    async def _negotiate_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self.failure is not None:
                return  # nothing more to offer on a connection that ended
            try:
                offer = await self.pc.createOffer()
                await self.pc.setLocalDescription(offer)
            except Exception:
                if self.check_failed() is not None:
                    return
                raise
            self._awaiting_answer = True
            self._answered.clear()
            self.offers_sent += 1
            self._on_offer(str(self.pc.localDescription.sdp), self.mapping())
            await self._answered.wait()
            await _settle(self.pc)

    async def set_answer(self, sdp: str) -> None:
        self._check_usable()
        if not self._awaiting_answer:
            raise SfuError(SfuCode.NO_OFFER_PENDING, "no offer is waiting for an answer")
        # An answer has the m-lines of the SFU's own offer, however many slots it holds.
        offered = count_media_sections(str(self.pc.localDescription.sdp))
        answer = await read_client_description(sdp, self.config, max_sections=offered,
                                               offer=False)
        if not self._awaiting_answer or self.closed:  # closed or answered meanwhile
            raise SfuError(SfuCode.NO_OFFER_PENDING, "no offer is waiting for an answer")
        try:
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=answer.sdp, type="answer"))
        except Exception as exc:
            raise SfuError(SfuCode.INVALID_SDP, f"answer rejected: {exc}") from exc
        self._awaiting_answer = False
        self._answered.set()

    def send_data(self, message: str) -> bool:
        if self.channel.readyState != "open":
            return False
        self.channel.send(message)
        return True

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for consumer in list(self.consumers.values()):
            consumer.close()
        self.consumers.clear()
        for slot in self._slots:
            slot.track.stop()
        await close_peer_connection(self.pc)
