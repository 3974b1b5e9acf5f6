"""Relaying between ``parley serve`` processes: a killed owner, and ``--workers 2``."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import aiohttp
from redis.asyncio import Redis

from tests.cluster.redisproc import RedisServer
from tests.conftest import Client, token
from tests.signaling.test_cli import KEYS, PARLEY, clean_env, free_port, running

FAST_ENV = {"PARLEY_CLUSTER_HEARTBEAT_INTERVAL": "0.5", "PARLEY_CLUSTER_NODE_TTL": "2",
            "PARLEY_CLUSTER_RELAY_HEARTBEAT_INTERVAL": "0.5",
            "PARLEY_CLUSTER_RELAY_TIMEOUT": "2", "PARLEY_CLUSTER_REQUEST_TIMEOUT": "1"}


def serve_argv(port: int, redis_url: str, *extra: str) -> list[str]:
    return [PARLEY, "serve", "--port", str(port), "--keys", KEYS, "--redis-url", redis_url,
            *extra]


async def node_id(http: aiohttp.ClientSession, base: str) -> str:
    for _ in range(100):
        async with http.get(f"{base}/readyz") as resp:
            if resp.status == 200:
                return str((await resp.json())["node"])
        await asyncio.sleep(0.1)
    raise AssertionError("node never ready")


async def test_a_killed_owner_sends_relayed_clients_reconnect_and_the_room_comes_back(
        tmp_path: Path, redis_server: RedisServer, redis: Redis) -> None:
    port_a, port_b = free_port(), free_port()
    env = clean_env(**FAST_ENV)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with running(tmp_path / "a", serve_argv(port_a, redis_server.url), port_a,
                       env=env) as a, \
            running(tmp_path / "b", serve_argv(port_b, redis_server.url), port_b,
                    env=env) as b, \
            aiohttp.ClientSession() as http:
        a_id, b_id = await node_id(http, a.url("")), await node_id(http, b.url(""))
        await redis.set("parley:room:r1", a_id)  # the room lives on a
        bob = Client(await http.ws_connect(b.url("/rtc")))
        joined = await bob.join(token("r1", "bob"))
        assert joined["server"]["node"] == a_id  # relayed: the owner answered
        os.killpg(a.proc.pid, signal.SIGKILL)
        message = await bob.expect("reconnect", timeout=6)
        assert message["reason"] == "node_lost"
        assert (await bob.closed()).data == 4010
        # Rejoining through the same load balancer re-claims the room once a's record expired.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:
            again = Client(await http.ws_connect(b.url("/rtc")))
            await again.send(type="join", token=token("r1", "bob"), media=False)
            reply = await again.recv()
            if reply["type"] == "joined":
                break
            assert reply["code"] == "cluster_unavailable", reply
            assert loop.time() < deadline, "the room never came back"
            await again.ws.close()
            await asyncio.sleep(0.3)
        assert reply["server"]["node"] == b_id
        assert await redis.get("parley:room:r1") == b_id
        await again.ws.close()


async def _worker_sample(url: str) -> tuple[str, float]:
    """One TCP connection: which worker answered, and its relayed edge sessions."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
        async with http.get(f"{url}/readyz") as resp:
            worker = str((await resp.json())["node"])
        async with http.get(f"{url}/metrics") as resp:
            text = await resp.text()
    found = re.search(r'parley_relay_sessions\{side="edge"\} (\S+)', text)
    return worker, float(found.group(1)) if found else 0.0


async def test_two_workers_serve_one_meeting_whose_sockets_land_on_both(
        tmp_path: Path, redis_server: RedisServer) -> None:
    port = free_port()
    argv = serve_argv(port, redis_server.url, "--workers", "2")
    async with running(tmp_path, argv, port, env=clean_env(**FAST_ENV)) as server, \
            aiohttp.ClientSession() as http:
        await asyncio.sleep(1.0)  # both workers registered
        clients = []
        for i in range(10):
            client = Client(await http.ws_connect(server.url("/rtc")))
            await client.join(token("w", f"p{i}"))
            clients.append(client)
        await clients[0].send(type="data", payload="hello", topic="chat")
        for client in clients[1:]:
            assert (await client.expect("data"))["payload"] == "hello"
        edges: dict[str, float] = {}
        for _ in range(40):
            worker, relayed = await _worker_sample(server.url(""))
            edges[worker] = relayed
            if len(edges) == 2:
                break
        assert len(edges) == 2, edges
        assert sum(edges.values()) >= 1, edges  # some sockets are on the non-owner worker
        assert sum(edges.values()) < 10
        for client in clients:
            await client.ws.close()
