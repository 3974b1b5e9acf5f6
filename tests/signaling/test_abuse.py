"""Connection abuse on real loopback sockets: slow headers, too many sockets or joins per IP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest

from signaling.app import create_app
from signaling.appkeys import NODE
from signaling.errors import CloseCode
from signaling.listener import Serving, serve
from signaling.node import Node
from signaling.ratelimit import KeyedRate
from tests.conftest import Client, SignalingConfig, StartNode, make_config, token
from tests.signaling.rawsock import closed_by_peer, open_socket

HOST = "127.0.0.1"
PARTIAL = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


@contextlib.asynccontextmanager
async def guarded(**signaling: object) -> AsyncIterator[tuple[Node, Serving]]:
    """A node served as ``parley serve`` serves it: behind the connection guard."""
    config = replace(make_config(signaling=SignalingConfig(**signaling)),  # type: ignore[arg-type]
                     host=HOST, port=0)
    app = create_app(config)
    serving = await serve(app, config, app[NODE].metrics)
    try:
        yield app[NODE], serving
    finally:
        await app[NODE].drain(0.5)
        await serving.stop()


def refused(node: Node, reason: str) -> float:
    value = node.metrics_registry.get_sample_value(
        "parley_signaling_refused_connections_total", {"reason": reason})
    return value or 0.0


async def healthz(port: int) -> int:
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://{HOST}:{port}/healthz") as resp:
        return resp.status


async def test_slowloris_sockets_are_dropped_after_the_header_timeout() -> None:
    async with guarded(header_timeout=0.5, max_connections_per_ip=0) as (node, serving):
        loop = asyncio.get_running_loop()
        socks: list[socket.socket] = []
        try:
            for i in range(100):
                sock = await open_socket(HOST, serving.port)
                socks.append(sock)
                if i % 2:  # half send part of their headers, half nothing at all
                    await loop.sock_sendall(sock, PARTIAL)
            assert await healthz(serving.port) == 200  # the node still serves others
            started = loop.time()
            closed = await asyncio.gather(*(closed_by_peer(s, 3.0) for s in socks))
            assert all(closed)
            assert loop.time() - started < 3.0
        finally:
            for sock in socks:
                sock.close()
        assert refused(node, "header_timeout") == 100


async def test_a_socket_that_completed_its_headers_outlives_the_header_timeout() -> None:
    async with guarded(header_timeout=0.3) as (_, serving), aiohttp.ClientSession() as http:
        client = Client(await http.ws_connect(f"http://{HOST}:{serving.port}/rtc"))
        await client.join(token("r1", "alice"))
        await asyncio.sleep(0.9)
        await client.send(type="ping")
        await client.expect("pong")
        await client.ws.close()


async def test_kept_alive_connection_dribbling_its_next_request_is_closed() -> None:
    async with guarded(header_timeout=0.5) as (_, serving):
        loop = asyncio.get_running_loop()
        sock = await open_socket(HOST, serving.port)
        try:
            await loop.sock_sendall(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            first = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5.0)
            assert first.startswith(b"HTTP/1.1 200")
            await loop.sock_sendall(sock, PARTIAL)
            assert await closed_by_peer(sock, 3.0)
        finally:
            sock.close()


async def test_sockets_over_the_per_ip_cap_are_refused() -> None:
    async with guarded(header_timeout=30.0, max_connections_per_ip=5) as (node, serving):
        socks = [await open_socket(HOST, serving.port) for _ in range(5)]
        extra = await open_socket(HOST, serving.port)
        try:
            assert await closed_by_peer(extra, 3.0)
            assert refused(node, "per_ip_connections") == 1
            assert not await closed_by_peer(socks[0], 0.3)  # the ones admitted stay
            socks.pop().close()
            await asyncio.sleep(0.2)  # the server sees the close
            assert await healthz(serving.port) == 200  # a slot is free again
        finally:
            extra.close()
            for sock in socks:
                sock.close()


async def test_joins_over_the_per_ip_rate_are_refused(start_node: StartNode) -> None:
    h = await start_node(signaling=SignalingConfig(join_rate_per_ip=0.1, join_burst_per_ip=3))
    for i in range(3):
        await h.joined("r1", f"user{i}")
    late = await h.connect()
    await late.send(type="join", token=token("r1", "late"), media=False)
    error = await late.expect("error")
    assert error["code"] == "rate_limited"
    close = await late.closed()
    assert close.data == CloseCode.RATE_LIMITED
    assert refused(h.node, "join_rate") == 1
    assert h.node.rooms.participant_count() == 3


def test_a_zero_join_rate_allows_everything() -> None:
    limits = KeyedRate(0.0, 1)
    assert all(limits.take("1.2.3.4") for _ in range(1000))
    assert len(limits) == 0


def test_join_limits_forget_refilled_addresses_and_stay_bounded() -> None:
    now = [0.0]
    limits = KeyedRate(1.0, 2, clock=lambda: now[0], max_keys=10)
    assert limits.take("a") and limits.take("a") and not limits.take("a")
    for i in range(50):
        limits.take(f"10.0.0.{i}")
    assert len(limits) == 10
    now[0] += 3.0  # every bucket has refilled
    assert limits.take("b")
    assert len(limits) == 1


async def test_an_overlong_request_line_is_refused_with_one_warning_and_no_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    async with guarded() as (node, serving):
        loop = asyncio.get_running_loop()
        sock = await open_socket(HOST, serving.port)
        try:
            secret = b"x" * 9000
            await loop.sock_sendall(sock, b"GET /" + secret + b" HTTP/1.1\r\nHost: a\r\n\r\n")
            answer = await asyncio.wait_for(loop.sock_recv(sock, 64), 5.0)
        finally:
            sock.close()
        assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400")
        assert await healthz(serving.port) == 200
        records = [r for r in caplog.records if r.name == "aiohttp.server"]
        assert records, "aiohttp logged nothing for the bad request"
        for record in records:
            assert record.exc_info is None and record.levelno == logging.WARNING
            assert "xxxx" not in record.getMessage()
        assert refused(node, "malformed_http") == 1
