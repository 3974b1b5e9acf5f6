"""The cluster: what relaying a session through another node costs.

Two ``parley serve`` processes (A and B) and a redis-server on loopback. Both
rooms are claimed for A. In the same run:

- **same node**: a sender and a receiver on A, in room ``local``;
- **relayed**: a sender and a receiver on B, in room ``relay``: each message
  goes B → Redis → A (the room) → Redis → B.

The sender sends ``data`` messages at a steady rate, each carrying its send
time; the receiver measures send → receive. CPU is the sum over A, B and
redis-server during the phase, divided by the messages sent. Then joins:
join sent → ``joined`` received, directly on A and through B.

Fail-over (separate runs, SFU on, default cluster timings): three nodes, the
room on A, three Python clients each publishing the pre-encoded test video and
subscribing, sockets on A, B and C (each given every node's URL). A is killed
with SIGKILL; each client's time from the kill to new video frames from both
other publishers on its new connection. The p50 is over runs of the slowest
client of each run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
from redis.asyncio import Redis

from bench.procs import ServerProcess, cpu_seconds, free_port, parley_script
from bench.report import Row, SuiteResult, percentile
from client.client import ParleyClient
from client.media import EncodedTrack, encode_video
from client.watch import MediaWatch
from signaling.auth import mint_token

NAME = "cluster"
KEY, SECRET = "bench", "bench-secret-0123456789abcdef0123456789"
CONFIG = """signaling:
  rate_limit_per_second: 5000
  rate_limit_burst: 5000
  max_connections_per_ip: 0
  join_rate_per_ip: 0
sfu:
  enabled: false
"""
MEDIA_CONFIG = """sfu:
  ice_addresses: ["127.0.0.1"]
"""
RATE = 200
"""Messages per second the sender sends."""


@contextlib.contextmanager
def _redis() -> Iterator[tuple[str, int]]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is required for the cluster suite")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        yield f"redis://127.0.0.1:{port}/0", proc.pid
    finally:
        proc.terminate()
        proc.wait(5)


def _server(config: str, redis_url: str) -> ServerProcess:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    argv = [parley_script(), "serve", "--port", str(port), "--keys", f"{KEY}:{SECRET}",
            "--config", config, "--log-level", "warning", "--redis-url", redis_url]
    return ServerProcess("parley serve", argv, port=port, env=env)


def _token(room: str, identity: str) -> str:
    return mint_token(key=KEY, secret=SECRET, room=room, identity=identity, role="speaker",
                      ttl=3600)


async def _node_id(http: aiohttp.ClientSession, server: ServerProcess) -> str:
    for _ in range(100):
        async with http.get(f"http://127.0.0.1:{server.port}/readyz") as resp:
            if resp.status == 200:
                return str((await resp.json())["node"])
        await asyncio.sleep(0.1)
    raise RuntimeError("node never ready")


async def _join(http: aiohttp.ClientSession, server: ServerProcess, room: str,
                identity: str) -> tuple[aiohttp.ClientWebSocketResponse, float]:
    ws = await http.ws_connect(server.ws_url)
    started = time.perf_counter()
    await ws.send_json({"type": "join", "token": _token(room, identity), "media": False})
    while True:
        msg = await ws.receive_json(timeout=10)
        if msg["type"] == "joined":
            return ws, time.perf_counter() - started
        if msg["type"] == "error":
            raise RuntimeError(f"join refused: {msg}")


async def _phase(http: aiohttp.ClientSession, server: ServerProcess, room: str,
                 count: int, pids: list[int]) -> dict[str, Any]:
    sender, _ = await _join(http, server, room, "sender")
    receiver, _ = await _join(http, server, room, "receiver")
    samples: list[float] = []

    async def receive() -> None:
        while len(samples) < count:
            msg = await receiver.receive_json(timeout=10)
            if msg["type"] == "data":
                samples.append(time.time() - float(msg["payload"]["t"]))

    reader = asyncio.get_running_loop().create_task(receive())
    cpu_before = sum(cpu_seconds(p) for p in pids)
    for _ in range(count):
        await sender.send_json({"type": "data", "payload": {"t": time.time()}, "topic": "b"})
        await asyncio.sleep(1 / RATE)
    await asyncio.wait_for(reader, 30)
    cpu = sum(cpu_seconds(p) for p in pids) - cpu_before
    await sender.close()
    await receiver.close()
    return {"messages": count, "p50": percentile(samples, 50), "p99": percentile(samples, 99),
            "cpu_per_message": cpu / count}


async def _measure(count: int, joins: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config:
        config.write(CONFIG)
    try:
        with _redis() as (redis_url, redis_pid):
            async with _server(config.name, redis_url) as a, \
                    _server(config.name, redis_url) as b, aiohttp.ClientSession() as http:
                a_id = await _node_id(http, a)
                await _node_id(http, b)
                redis = Redis.from_url(redis_url)
                for room in ("local", "relay", "joins"):
                    await redis.set(f"parley:room:{room}", a_id)
                await redis.aclose()
                pids = [a.pid, b.pid, redis_pid]
                local = await _phase(http, a, "local", count, pids)
                relayed = await _phase(http, b, "relay", count, pids)
                join_times: dict[str, list[float]] = {"direct": [], "through": []}
                keep: list[aiohttp.ClientWebSocketResponse] = []
                for n in range(joins):
                    for label, server in (("direct", a), ("through", b)):
                        ws, took = await _join(http, server, "joins", f"{label}-{n}")
                        join_times[label].append(took)
                        keep.append(ws)
                for ws in keep:
                    await ws.close()
    finally:
        os.unlink(config.name)
    return {"rate": RATE, "same_node": local, "relayed": relayed,
            "join_direct": {"p50": percentile(join_times["direct"], 50),
                            "p99": percentile(join_times["direct"], 99)},
            "join_through": {"p50": percentile(join_times["through"], 50),
                             "p99": percentile(join_times["through"], 99)},
            "joins": joins}


async def _failover_once(config: str) -> list[float]:
    """One run: seconds from the owner's SIGKILL to media back, per client."""
    clip = encode_video(seconds=1.0, width=160, height=120, bitrate=150_000)
    with _redis() as (redis_url, _):
        async with _server(config, redis_url) as a, _server(config, redis_url) as b, \
                _server(config, redis_url) as c, aiohttp.ClientSession() as http:
            servers = [a, b, c]
            ids = [await _node_id(http, s) for s in servers]
            redis = Redis.from_url(redis_url)
            await redis.set("parley:room:failover", ids[0])
            await redis.aclose()
            urls = [f"http://127.0.0.1:{s.port}/" for s in servers]
            clients = [ParleyClient(urls[i:] + urls[:i], _token("failover", f"p{i}"),
                                    decode=False) for i in range(3)]
            try:
                for client in clients:
                    await client.connect()
                    await client.publish(EncodedTrack(clip))
                pids = {c.participant_id for c in clients}
                await asyncio.gather(*(MediaWatch(c, pids - {c.participant_id},
                                                  same_connection=True).wait(30)
                                       for c in clients))
                os.kill(a.pid, signal.SIGKILL)
                watches = [MediaWatch(c, pids - {c.participant_id}) for c in clients]
                return list(await asyncio.gather(*(w.wait(30) for w in watches)))
            finally:
                for client in clients:
                    await client.close()


async def _failover(runs: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config:
        config.write(MEDIA_CONFIG)
    try:
        samples = [await _failover_once(config.name) for _ in range(runs)]
    finally:
        os.unlink(config.name)
    slowest = [max(run) for run in samples]
    return {"runs": samples, "p50": percentile(slowest, 50), "max": max(slowest)}


def _ms(value: float) -> str:
    return f"{value * 1000:.2f} ms"


def run(*, quick: bool = False) -> SuiteResult:
    started = time.monotonic()
    f = asyncio.run(_measure(200 if quick else 4000, 5 if quick else 50))
    f["failover"] = asyncio.run(_failover(3 if quick else 5))
    same, relayed = f["same_node"], f["relayed"]
    rows = [
        Row(figure="message latency, same node (data, sender → receiver)",
            value=f"p50 {_ms(same['p50'])}, p99 {_ms(same['p99'])}",
            note=f"{same['messages']} messages at {f['rate']}/s"),
        Row(figure="message latency, relayed (both sockets on B, room on A)",
            value=f"p50 {_ms(relayed['p50'])}, p99 {_ms(relayed['p99'])}",
            note="two bus hops: B → A → B"),
        Row(figure="CPU per message (A + B + redis-server)",
            value=f"same node {same['cpu_per_message'] * 1e6:.0f} µs, "
                  f"relayed {relayed['cpu_per_message'] * 1e6:.0f} µs",
            note=f"x{relayed['cpu_per_message'] / max(same['cpu_per_message'], 1e-9):.1f}"),
        Row(figure="join latency (join sent → joined)",
            value=f"direct p50 {_ms(f['join_direct']['p50'])} / p99 "
                  f"{_ms(f['join_direct']['p99'])}; through a non-owner p50 "
                  f"{_ms(f['join_through']['p50'])} / p99 {_ms(f['join_through']['p99'])}",
            note=f"{f['joins']} joins each"),
        Row(figure="owner SIGKILL → media back (slowest of 3 clients)",
            value=f"p50 {f['failover']['p50']:.2f} s, max {f['failover']['max']:.2f} s",
            note=f"{len(f['failover']['runs'])} runs; default cluster timings"),
    ]
    return SuiteResult(name=NAME, rows=rows, figures=f, seconds=time.monotonic() - started)
