"""A room's node dies during a meeting with media: everyone is back, with video, on
another node within 10 s (default cluster timings, three ``parley serve`` processes)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
from redis.asyncio import Redis

from client.client import ParleyClient
from client.media import EncodedTrack, encode_video
from client.watch import MediaWatch
from tests.cluster.redisproc import RedisServer
from tests.cluster.test_relay_process import node_id, serve_argv
from tests.conftest import token
from tests.signaling.test_cli import clean_env, free_port, running

FAILOVER_LIMIT = 10.0
"""Seconds from the owner's death to media flowing again, for every client."""


async def test_a_killed_owner_s_meeting_is_back_with_media_on_other_nodes_within_10_s(
        tmp_path: Path, redis_server: RedisServer, redis: Redis) -> None:
    ports = [free_port() for _ in range(3)]
    env = clean_env(PARLEY_SFU_ICE_ADDRESSES="127.0.0.1", PARLEY_LOG_LEVEL="warning")
    clip = encode_video(seconds=1.0, width=160, height=120, bitrate=150_000)
    async with AsyncExitStack() as stack:
        nodes = []
        for name, port in zip("abc", ports, strict=True):
            (tmp_path / name).mkdir()
            nodes.append(await stack.enter_async_context(
                running(tmp_path / name, serve_argv(port, redis_server.url), port, env=env)))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        ids = [await node_id(http, n.url("")) for n in nodes]
        await redis.set("parley:room:town", ids[0])  # the room lives on a
        urls = [n.url("/") for n in nodes]
        # Sockets: alice on a (the owner itself), bob on b and carol on c (relayed). Each
        # lists every node, starting with its own, as a load balancer would offer them.
        clients = {name: ParleyClient(urls[i:] + urls[:i], token("town", name), decode=False)
                   for i, name in enumerate(("alice", "bob", "carol"))}
        for client in clients.values():
            stack.push_async_callback(_leave, client)
            joined = await client.connect()
            assert joined["server"]["node"] == ids[0]
            await client.publish(EncodedTrack(clip))
        pids = {name: c.participant_id for name, c in clients.items()}
        before = {name: MediaWatch(c, set(pids.values()) - {pids[name]}, same_connection=True)
                  for name, c in clients.items()}
        await asyncio.gather(*(w.wait(20) for w in before.values()))

        os.killpg(nodes[0].proc.pid, signal.SIGKILL)
        killed = time.perf_counter()
        watches = {name: MediaWatch(c, set(pids.values()) - {pids[name]})
                   for name, c in clients.items()}
        took = await asyncio.gather(*(w.wait(FAILOVER_LIMIT + 5) for w in watches.values()))
        for name, seconds in zip(watches, took, strict=True):
            print(f"kill -> media back: {name} {seconds:.2f} s")
        assert watches["alice"].armed_at - killed < 0.1
        assert max(took) < FAILOVER_LIMIT, dict(zip(watches, took, strict=True))
        # One new owner for the room, the same participants, media on it only.
        owner = await redis.get("parley:room:town")
        assert owner in ids[1:]
        for name, client in clients.items():
            assert client.participant_id == pids[name]
            assert client.joined["server"]["node"] == owner


async def _leave(client: ParleyClient) -> None:
    with contextlib.suppress(Exception):
        await client.leave()
