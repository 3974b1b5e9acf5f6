"""Draining a node of a cluster: its meetings move to another node, resumed."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import aiohttp

from client.client import ParleyClient
from tests.cluster.redisproc import RedisServer
from tests.conftest import token
from tests.signaling.test_cli import KEYS, PARLEY, clean_env, free_port, running

DRAIN = 1.5
STEP = 15.0


def node_env(redis: RedisServer) -> dict[str, str]:
    return clean_env(PARLEY_REDIS_URL=redis.url, PARLEY_CLUSTER_DRAIN_TIMEOUT=str(DRAIN),
                     PARLEY_CLUSTER_NODE_TTL="1", PARLEY_CLUSTER_HEARTBEAT_INTERVAL="0.2",
                     PARLEY_SHUTDOWN_GRACE="3")


async def node_id(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as resp:
        return str((await resp.json())["node"])


async def status(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as resp:
        return resp.status


async def test_sigterm_moves_the_meeting_to_another_node_and_exits_0(
        tmp_path: Path, redis_server: RedisServer) -> None:
    ports = free_port(), free_port()
    env = node_env(redis_server)
    argvs = [[PARLEY, "serve", "--port", str(p), "--keys", KEYS] for p in ports]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with running(tmp_path / "a", argvs[0], ports[0], env=env) as a, \
            running(tmp_path / "b", argvs[1], ports[1], env=env) as b, \
            aiohttp.ClientSession() as http:
        urls = [a.url("/"), b.url("/")]
        alice = ParleyClient(urls, token("town", "alice"), media=False)
        bob = ParleyClient(urls[::-1], token("town", "bob", role="listener"), media=False)
        try:
            first = [await alice.connect(), await bob.connect()]
            node_a = first[0]["server"]["node"]  # the room's node (sockets on both nodes)
            assert [j["server"]["node"] for j in first] == [node_a, node_a]
            pids = [alice.participant_id, bob.participant_id]
            ids = [await node_id(http, server.url("/readyz")) for server in (a, b)]
            if ids[1] == node_a:  # placement chose b: drain b instead, the same way
                a, b = b, a

            a.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            # draining: not ready, still alive, and the meeting goes on for drain_timeout
            assert await status(http, a.url("/readyz")) == 503
            assert await status(http, a.url("/livez")) == 200
            assert not alice.rejoined.qsize()
            await alice.request({"type": "data", "payload": "still here"})

            try:
                moved = await asyncio.wait_for(
                    asyncio.gather(alice.rejoined.get(), bob.rejoined.get()), STEP)
            except TimeoutError:
                raise AssertionError(f"{_drain(alice.events)}\n{_drain(bob.events)}\n"
                                     f"{a.output()[-3000:]}\n{b.output()[-3000:]}") from None
            for joined, pid in zip(moved, pids, strict=True):
                assert joined["resumed"] is True and joined["participant"]["id"] == pid
                assert joined["server"]["node"] != node_a
            assert moved[0]["server"]["node"] == moved[1]["server"]["node"]
            code = await asyncio.wait_for(a.proc.wait(), STEP)
            assert code == 0, a.output()
            # together again on the other node, as the same participants
            later = moved[0] if moved[0]["participants"] else moved[1]
            assert [p["id"] for p in later["participants"]] in ([pids[0]], [pids[1]])
            assert "reconnect" in [e["type"] for e in _drain(alice.events)]
            assert await status(http, b.url("/readyz")) == 200
        finally:
            with contextlib.suppress(Exception):
                await alice.leave()
            with contextlib.suppress(Exception):
                await bob.leave()


def _drain(queue: asyncio.Queue[dict]) -> list[dict]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out
