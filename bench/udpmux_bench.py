"""What the node's shared UDP socket (``sfu.udp_port``) costs per received packet.

Two measurements, each against a plain socket in the same run:

- **receive path**: a sender process sends 1,200-byte RTP-like datagrams over
  loopback, paced in bursts, first to a plain asyncio datagram endpoint, then to
  a :class:`sfu.udpmux.UdpMux` with 1,000 attached connections (the sender's
  address claimed by a STUN request naming one of them, as an ICE check does).
  The receiving protocol only counts. Reported: this process's CPU per received
  packet, from the first packet until the sender is done (selector, ``recvfrom``,
  asyncio's callback, and for the mux its routing; the process is otherwise
  idle), and the ratio mux / plain. Phases
  alternate, the median of each is kept.
- **routing alone**: the mux's per-datagram function called directly, for a
  packet routed by address (media) and for a STUN request routed by ufrag,
  against a direct call of the same counting protocol.

``python -m bench.udpmux_bench '<json spec>'`` is the sender process.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import sys
import time
from typing import Any

from aioice import stun

from bench.procs import BenchError, ClientProcess
from bench.report import Row, SuiteResult
from sfu.udpmux import UdpMux

NAME = "udpmux"
SIZE = 1200
CONNECTIONS = 1000
TARGET = "tgt0"


class _Counter(asyncio.DatagramProtocol):
    """Counts media datagrams; notes the CPU time at the first one."""

    def __init__(self) -> None:
        self.count = 0
        self.first_cpu = 0.0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if data[0] < 4:
            return  # the sender's STUN request
        if not self.count:
            self.first_cpu = time.process_time()
        self.count += 1


def _binding_request(ufrag: str) -> bytes:
    message = stun.Message(message_method=stun.Method.BINDING,
                           message_class=stun.Class.REQUEST)
    message.attributes["USERNAME"] = f"{ufrag}:bench"
    message.attributes["PRIORITY"] = 1
    return bytes(message)


async def _mux_with_connections() -> tuple[UdpMux, _Counter]:
    mux = await UdpMux.open("127.0.0.1", 0)
    target = _Counter()
    mux.attach(TARGET, target)
    for i in range(1, CONNECTIONS):
        mux.attach(f"c{i:04d}", asyncio.DatagramProtocol())
    return mux, target


async def _receive_phase(*, mux: bool, packets: int, rate: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    if mux:
        shared, counter = await _mux_with_connections()
        port = shared.address[1]
    else:
        counter = _Counter()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: counter, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
    spec = {"port": port, "packets": packets, "rate": rate, "ufrag": TARGET}
    try:
        async with ClientProcess("udp sender", "bench.udpmux_bench", spec) as sender:
            await sender.read("done", timeout=packets / rate + 30)
            await asyncio.sleep(0.2)  # the last datagrams still in the socket buffer
            # Idle since the last packet: what follows it costs next to nothing.
            cpu = time.process_time() - counter.first_cpu
    finally:
        if mux:
            await shared.close()
        else:
            transport.close()
    if counter.count < 2:
        raise BenchError(f"only {counter.count} packets arrived")
    return {"us_per_packet": cpu / counter.count * 1e6, "received": counter.count,
            "lost": packets - counter.count}


def _routing_alone(calls: int) -> dict[str, float]:
    """ns per datagram: the mux's routing + the protocol, vs the protocol alone."""

    async def measure() -> dict[str, float]:
        mux, counter = await _mux_with_connections()
        try:
            media_from = ("127.0.0.1", 40000)
            request = _binding_request(TARGET)
            mux._receive(request, media_from)  # claims the address, as a check does
            media = b"\x80" + bytes(SIZE - 1)
            out = {}
            for label, call, data in (
                    ("direct_ns", counter.datagram_received, media),
                    ("by_address_ns", mux._receive, media),
                    ("by_ufrag_ns", mux._receive, request)):
                started = time.perf_counter()
                for _ in range(calls):
                    call(data, media_from)
                out[label] = (time.perf_counter() - started) / calls * 1e9
            return out
        finally:
            await mux.close()

    return asyncio.run(measure())


def _measure(quick: bool) -> dict[str, Any]:
    rounds, packets, rate = (1, 20_000, 20_000) if quick else (3, 100_000, 20_000)
    plain: list[dict[str, float]] = []
    muxed: list[dict[str, float]] = []
    for _ in range(rounds):
        plain.append(asyncio.run(_receive_phase(mux=False, packets=packets, rate=rate)))
        muxed.append(asyncio.run(_receive_phase(mux=True, packets=packets, rate=rate)))
    plain_us = statistics.median(p["us_per_packet"] for p in plain)
    mux_us = statistics.median(p["us_per_packet"] for p in muxed)
    return {"rounds": rounds, "packets": packets, "rate": rate, "size": SIZE,
            "connections": CONNECTIONS, "plain": plain, "mux": muxed,
            "plain_us_per_packet": plain_us, "mux_us_per_packet": mux_us,
            "ratio": mux_us / plain_us, "added_us_per_packet": mux_us - plain_us,
            **_routing_alone(20_000 if quick else 200_000)}


def run(*, quick: bool = False) -> SuiteResult:
    started = time.monotonic()
    f = _measure(quick)
    lost = sum(int(p["lost"]) for p in (*f["plain"], *f["mux"]))
    sample = (f"median of {f['rounds']} runs of {f['packets']:,} packets of {f['size']} B at "
              f"{f['rate']:,}/s; {lost} lost")
    rows = [
        Row(figure="receive, plain asyncio UDP socket",
            value=f"{f['plain_us_per_packet']:.1f} µs CPU/packet", note=sample),
        Row(figure=f"receive, shared socket with {f['connections']:,} connections",
            value=f"{f['mux_us_per_packet']:.1f} µs CPU/packet",
            note=f"ratio {f['ratio']:.2f} to plain, +{f['added_us_per_packet']:.1f} µs"),
        Row(figure="routing alone, media by address",
            value=f"{f['by_address_ns']:.0f} ns/packet",
            note=f"protocol called directly: {f['direct_ns']:.0f} ns"),
        Row(figure="routing alone, STUN request by ufrag",
            value=f"{f['by_ufrag_ns']:.0f} ns/packet",
            note="ICE checks and consent only (a few per second per connection)"),
    ]
    return SuiteResult(name=NAME, rows=rows, figures=f, seconds=time.monotonic() - started)


def _send(spec: dict[str, Any]) -> None:
    """The sender process: one STUN request, then paced media datagrams."""
    dest = ("127.0.0.1", int(spec["port"]))
    packets, rate = int(spec["packets"]), int(spec["rate"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.sendto(_binding_request(str(spec["ufrag"])), dest)
        time.sleep(0.1)
        payload = b"\x80" + bytes(SIZE - 1)
        burst = 50
        next_at = time.monotonic()
        for sent in range(0, packets, burst):
            for _ in range(min(burst, packets - sent)):
                sock.sendto(payload, dest)
            next_at += burst / rate
            time.sleep(max(0.0, next_at - time.monotonic()))
    print(json.dumps({"event": "done"}), flush=True)


if __name__ == "__main__":
    _send(json.loads(sys.argv[1]))
