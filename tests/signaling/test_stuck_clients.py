"""Clients that stop reading: every write has a deadline, a stuck socket is aborted."""

from __future__ import annotations

import asyncio
import json
import socket

from conference.ids import Identity, RoomName
from tests.conftest import NodeHarness, SignalingConfig, StartNode, token
from tests.signaling.rawsock import SMALL_BUFFER, open_socket, send_json, upgrade

SEND_TIMEOUT = 0.5
# A flood large enough to fill the kernel's buffers on loopback (several MB), with room in
# the outbox so that it is the stuck write, not the queue, that notices the client.
STUCK = SignalingConfig(send_timeout=SEND_TIMEOUT, send_queue_size=100_000,
                        rate_limit_per_second=10_000.0, rate_limit_burst=10_000,
                        resume_window=0.0)  # a dropped socket leaves at once
PAYLOAD = "x" * 30_000
FLOOD = 400  # messages of 30 kB: 12 MB


async def stuck_member(h: NodeHarness, identity: str = "stuck") -> socket.socket:
    """A raw client that upgrades and joins r1, then never reads another byte."""
    host, port = h.server.host, h.server.port
    assert port is not None
    sock = await open_socket(host, port, rcvbuf=SMALL_BUFFER)
    await upgrade(sock, host, port)
    await send_json(sock, {"type": "join", "token": token("r1", identity), "media": False})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while member(h, identity) is None:
        assert loop.time() < deadline, "the raw client did not join"
        await asyncio.sleep(0.02)
    return sock


def member(h: NodeHarness, identity: str) -> object | None:
    room = h.node.rooms.get(RoomName("r1"))
    return None if room is None else room.by_identity(Identity(identity))


def connections_gauge(h: NodeHarness) -> float | None:
    return h.node.metrics_registry.get_sample_value("parley_signaling_connections")


async def test_client_that_stops_reading_is_aborted_within_the_send_deadline(
        start_node: StartNode) -> None:
    h = await start_node(signaling=STUCK)
    sock = await stuck_member(h)
    flooder = await h.joined("r1", "flooder")
    assert connections_gauge(h) == 2
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(FLOOD):
        await flooder.ws.send_str(json.dumps({"type": "data", "payload": PAYLOAD}))
    try:
        while member(h, "stuck") is not None or len(h.node.connections) > 1:
            # the heartbeat (30 s) plays no part: only the send deadline can end it this soon
            assert loop.time() - started < 10.0, "the stuck client was not torn down"
            await asyncio.sleep(0.05)
    finally:
        sock.close()
    assert connections_gauge(h) == 1
    timeouts = h.node.metrics_registry.get_sample_value("parley_signaling_send_timeouts_total")
    assert timeouts is not None and timeouts >= 1
    # the flooder is unharmed
    await flooder.send(type="ping")
    await flooder.expect("pong")


async def test_drain_ends_within_the_grace_period_with_a_stuck_client(
        start_node: StartNode) -> None:
    # A long send deadline: only the end of the grace period can remove this client.
    h = await start_node(signaling=SignalingConfig(
        send_timeout=30.0, send_queue_size=100_000,
        rate_limit_per_second=10_000.0, rate_limit_burst=10_000))
    sock = await stuck_member(h)
    flooder = await h.joined("r1", "flooder")
    for _ in range(FLOOD):
        await flooder.ws.send_str(json.dumps({"type": "data", "payload": PAYLOAD}))
    await flooder.send(type="ping")
    await flooder.expect("pong")  # the flood has been queued to the stuck client
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await asyncio.wait_for(h.node.drain(1.0), 5.0)
    finally:
        sock.close()
    assert loop.time() - started < 1.5
    assert h.node.connections == set()
    assert member(h, "stuck") is None
