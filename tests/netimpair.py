"""A UDP relay on loopback that impairs one direction of a media path.

The test client is given the relay's port in place of the SFU's ICE
candidate; the relay forwards both ways and, towards the client, applies a
rate limit (token bucket with a bounded queue), random loss and delay. ICE
sees the relay as a NAT (peer-reflexive candidate) and works unchanged.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection

from client.client import ParleyClient


@dataclass
class Impairment:
    rate_bps: float | None = None
    """Downlink rate limit (None: unlimited)."""
    loss: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    """Each packet is delayed a further uniform 0…``jitter`` seconds (so some reorder)."""
    queue_seconds: float = 0.2
    """Packets that would wait longer than this for the rate limit are dropped."""


class _Side(asyncio.DatagramProtocol):
    def __init__(self, on_packet: Any) -> None:
        self.on_packet = on_packet
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_packet(data, addr)


class RtpTally:
    """Per SSRC: frames sent (RTP packets with the marker bit), packets dropped, and the
    frames (RTP timestamps) that lost a packet. SRTP leaves RTP headers in the clear."""

    def __init__(self) -> None:
        self.frames: Counter[int] = Counter()
        self.dropped: Counter[int] = Counter()
        self.damaged: dict[int, set[int]] = {}

    def add(self, data: bytes, *, dropped: bool) -> None:
        if len(data) < 12 or not 128 <= data[0] < 192 or 72 <= data[1] & 0x7F <= 76:
            return  # not RTP (STUN, DTLS, RTCP)
        ssrc = int.from_bytes(data[8:12], "big")
        if data[1] & 0x80:
            self.frames[ssrc] += 1
        if dropped:
            self.dropped[ssrc] += 1
            self.damaged.setdefault(ssrc, set()).add(int.from_bytes(data[4:8], "big"))


class UdpRelay:
    """Client ⇄ relay ⇄ server; ``impairment`` applies to server → client packets."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.impairment = Impairment()
        self.blocked = False
        """Drop every packet, both ways (the path is dead)."""
        self.client_addr: tuple[str, int] | None = None
        self._front: _Side | None = None
        self._back: _Side | None = None
        self._busy_until = 0.0
        self.forwarded = 0
        self.dropped = 0
        self.rtp = RtpTally()
        """What the server sent and what ``loss`` dropped of it (RTP headers are clear)."""
        self.upstream = Impairment()
        """Loss and delay (``rate_bps`` is not applied) of client → server packets."""
        self.rtp_up = RtpTally()
        self.bytes_to_client = 0
        """Bytes delivered to the client (after loss, the rate limit and delay)."""
        self._rng = random.Random(7)

    @property
    def port(self) -> int:
        assert self._front is not None and self._front.transport is not None
        return int(self._front.transport.get_extra_info("sockname")[1])

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        _, front = await loop.create_datagram_endpoint(
            lambda: _Side(self._from_client), local_addr=("127.0.0.1", 0))
        _, back = await loop.create_datagram_endpoint(
            lambda: _Side(self._from_server), local_addr=("127.0.0.1", 0))
        self._front, self._back = front, back

    def _from_client(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.blocked:
            self.dropped += 1
            return
        self.client_addr = addr
        imp = self.upstream
        if imp.loss or imp.delay or imp.jitter:
            is_stun = len(data) > 0 and data[0] < 2
            drop = not is_stun and bool(imp.loss) and self._rng.random() < imp.loss
            self.rtp_up.add(data, dropped=drop)
            if drop:
                return
            delay = imp.delay + self._rng.uniform(0.0, imp.jitter)
            asyncio.get_running_loop().call_later(delay, self._to_server, data)
        else:
            self._to_server(data)

    def _to_server(self, data: bytes) -> None:
        transport = self._back.transport if self._back is not None else None
        if transport is not None and not transport.is_closing():
            transport.sendto(data, self.server)

    def _from_server(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.blocked:
            self.dropped += 1
            return
        if self.client_addr is None:
            return
        imp = self.impairment
        is_stun = len(data) > 0 and data[0] < 2  # keep ICE consent alive
        drop = not is_stun and bool(imp.loss) and self._rng.random() < imp.loss
        self.rtp.add(data, dropped=drop)
        if drop:
            self.dropped += 1
            return
        now = time.monotonic()
        delay = imp.delay + (self._rng.uniform(0.0, imp.jitter) if imp.jitter else 0.0)
        send_at = now + delay
        if imp.rate_bps and not is_stun:
            start = max(now, self._busy_until)
            if start - now > imp.queue_seconds:
                self.dropped += 1
                return
            self._busy_until = start + len(data) * 8 / imp.rate_bps
            send_at = self._busy_until + delay
        self.forwarded += 1
        if send_at <= now:
            self._send(data)
        else:
            asyncio.get_running_loop().call_at(
                asyncio.get_running_loop().time() + (send_at - now), self._send, data)

    def _send(self, data: bytes) -> None:
        transport = self._front.transport if self._front is not None else None
        if transport is not None and not transport.is_closing() and self.client_addr is not None:
            transport.sendto(data, self.client_addr)
            self.bytes_to_client += len(data)

    def close(self) -> None:
        for side in (self._front, self._back):
            if side is not None and side.transport is not None:
                side.transport.close()


_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ udp \d+ )(\S+) (\d+)( typ host.*)$",
                        re.IGNORECASE | re.MULTILINE)


def sdp_candidates(sdp: str) -> list[tuple[str, int]]:
    return [(m.group(2), int(m.group(3))) for m in _CANDIDATE.finditer(sdp)]


def redirect_candidates(sdp: str, ports: dict[int, int]) -> str:
    """Rewrite host candidates' ports (SFU port → relay port)."""
    def sub(m: re.Match[str]) -> str:
        port = ports.get(int(m.group(3)), int(m.group(3)))
        return f"{m.group(1)}{m.group(2)} {port}{m.group(4)}"
    return _CANDIDATE.sub(sub, sdp)


def hide_candidates(sdp: str) -> str:
    """Point the client's own host candidates at the discard port: the node then reaches
    the client only as the peer-reflexive address its checks come from (the relay)."""
    return _CANDIDATE.sub(lambda m: f"{m.group(1)}{m.group(2)} 9{m.group(4)}", sdp)


class RelayedClient(ParleyClient):
    """A client whose subscribe connection (and, with ``relay``, its publish connection)
    goes through UDP relays, one per SFU port. ``strict``: the node learns no other
    address of the client, so every packet takes the relay (and ``block`` kills the path)."""

    def __init__(self, *args: Any, relay: frozenset[str] = frozenset({"subscriber"}),
                 strict: bool = False, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.relayed = relay
        self.strict = strict
        self.relays: dict[int, UdpRelay] = {}
        """The subscribe connections' relays."""
        self.publish_relays: dict[int, UdpRelay] = {}
        self._blocked: set[str] = set()

    async def _through(self, sdp: str, target: str) -> str:
        relays = self.relays if target == "subscriber" else self.publish_relays
        for host, port in sdp_candidates(sdp):
            if port not in relays:
                relay = UdpRelay((host, port))
                relay.blocked = target in self._blocked
                await relay.start()
                relays[port] = relay
        return redirect_candidates(sdp, {port: relay.port for port, relay in relays.items()})

    async def _apply_offer(self, pc: RTCPeerConnection, offer: dict[str, Any]) -> None:
        if "subscriber" in self.relayed:
            offer = {**offer, "sdp": await self._through(offer["sdp"], "subscriber")}
        await super()._apply_offer(pc, offer)

    async def request(self, message: dict[str, Any], timeout: float = 20.0) -> dict[str, Any]:
        target = {"offer": "publisher", "answer": "subscriber"}.get(str(message.get("type")))
        if self.strict and target in self.relayed:
            message = {**message, "sdp": hide_candidates(message["sdp"])}
        reply = await super().request(message, timeout)
        if target == "publisher" and target in self.relayed:
            reply = {**reply, "sdp": await self._through(reply["sdp"], "publisher")}
        return reply

    def block(self, target: str, blocked: bool = True) -> None:
        """Kill (or restore) the path of one connection, and of those that follow it."""
        if blocked:
            self._blocked.add(target)
        else:
            self._blocked.discard(target)
        for relay in (self.relays if target == "subscriber" else self.publish_relays).values():
            relay.blocked = blocked

    def impair(self, impairment: Impairment) -> None:
        for relay in self.relays.values():
            relay.impairment = impairment

    def frames_of(self, kind: str) -> int:
        return sum(n for mid, n in self.frame_counts.items()
                   if (remote := self.remote.get(mid)) is not None and remote.kind == kind)

    async def close(self) -> None:
        await super().close()
        for relay in [*self.relays.values(), *self.publish_relays.values()]:
            relay.close()


async def received_bps(client: RelayedClient, seconds: float) -> float:
    """Bits per second the client's subscribe relays delivered to it over ``seconds``."""
    before = sum(r.bytes_to_client for r in client.relays.values())
    started = time.monotonic()
    await asyncio.sleep(seconds)
    after = sum(r.bytes_to_client for r in client.relays.values())
    return (after - before) * 8 / (time.monotonic() - started)


async def steady_bps(client: RelayedClient, timeout: float = 40.0) -> float:
    """What the client receives once the publisher's encoder has ramped up: two 3-second
    measurements in a row within 5 % of each other (at most ``timeout`` seconds)."""
    last = await received_bps(client, 3.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rate = await received_bps(client, 3.0)
        if abs(rate - last) <= 0.05 * last:
            return (rate + last) / 2
        last = rate
    raise AssertionError(f"the received bitrate never settled (last {last:.0f} bit/s)")
