"""Signalling benchmark clients: aiohttp WebSockets run in their own process.

Started by ``bench.signaling_bench`` as ``python -m bench.signaling_client '<json spec>'``.
It writes one JSON object per line on stdout (``{"event": "ready"}``, then
``{"event": "result", ...}``) and reads ``go`` / ``quit`` lines on stdin. The
same code drives Parley and the bare baseline server (bench/baseline_server.py),
which speak the same subset of the protocol: ``join`` → ``joined``,
``data`` → relayed ``data`` to the others and a ``data-sent`` ack to the sender.

Modes:
- ``flood``: join ``per_room`` clients to one room, wait for ``go``, then each
  sends ``data`` for ``duration`` seconds keeping at most ``window`` unacknowledged.
- ``joins``: ``rounds`` bursts of concurrent connect + join; report latencies.
- ``idle``: connect and join, report ``ready``, hold the sockets until ``quit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt

_DATA_PREFIX = '{"type":"data",'
_ACK_PREFIX = '{"type":"data-sent"'
_STDIN_TIMEOUT = 120.0
"""No client process waits for the driver longer than this."""
_JOIN_TIMEOUT = 30.0


@dataclass(frozen=True, kw_only=True)
class Spec:
    mode: str
    url: str
    key: str
    secret: str
    rooms: list[str]
    per_room: int
    prefix: str = "c"
    duration: float = 10.0
    window: int = 8
    payload_bytes: int = 16
    rounds: int = 1
    concurrency: int = 1000


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def _token(spec: Spec, room: str, identity: str) -> str:
    now = int(time.time())
    claims = {"iss": spec.key, "sub": identity, "iat": now, "exp": now + 3600,
              "grants": {"room": room, "role": "speaker"}}
    return jwt.encode(claims, spec.secret, algorithm="HS256")


def _join_text(spec: Spec, room: str, identity: str) -> str:
    # Signalling only: no subscribe connection (WebRTC) is created for these clients.
    return json.dumps({"type": "join", "id": "join", "room": room, "media": False,
                       "token": _token(spec, room, identity)})


async def _stdin() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def _await_word(stdin: asyncio.StreamReader, word: str) -> None:
    line = await asyncio.wait_for(stdin.readline(), _STDIN_TIMEOUT)
    if line.strip().decode() != word:
        raise SystemExit(f"expected {word!r} on stdin, got {line!r}")


async def _connect_and_join(http: aiohttp.ClientSession, spec: Spec, join: str,
                            ) -> tuple[aiohttp.ClientWebSocketResponse, float, float]:
    """Connect, send the join, wait for ``joined``; returns (ws, connect→joined, join→joined)."""
    async with asyncio.timeout(_JOIN_TIMEOUT):
        started = time.perf_counter()
        ws = await http.ws_connect(spec.url, autoping=True)
        sent = time.perf_counter()
        await ws.send_str(join)
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"socket closed before joined: {msg.type} {msg.data!r}")
            body = json.loads(msg.data)
            if body.get("type") == "joined":
                done = time.perf_counter()
                return ws, done - started, done - sent
            if body.get("type") == "error":
                raise RuntimeError(f"join refused: {body}")


async def _close_all(sockets: list[aiohttp.ClientWebSocketResponse]) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in sockets),
                                              return_exceptions=True), 10.0)


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- flood -----------------------------------------------------------------
@dataclass
class _Window:
    """The send window shared by the clients of this process."""

    start: float = float("inf")
    end: float = float("inf")

    def inside(self, now: float) -> bool:
        return self.start <= now < self.end


@dataclass
class _Flooder:
    ws: aiohttp.ClientWebSocketResponse
    window: _Window
    limit: int
    sent: int = 0
    acked: int = 0
    acked_in_window: int = 0
    received: int = 0
    received_in_window: int = 0
    errors: int = 0
    closed_early: bool = False
    slot: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def outstanding(self) -> int:
        return self.sent - self.acked

    async def read_loop(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            text: str = msg.data
            kind = "data" if text.startswith(_DATA_PREFIX) else (
                "data-sent" if text.startswith(_ACK_PREFIX) else json.loads(text).get("type"))
            now = time.monotonic()
            if kind == "data":
                self.received += 1
                if self.window.inside(now):
                    self.received_in_window += 1
            elif kind == "data-sent":
                self.acked += 1
                if self.window.inside(now):
                    self.acked_in_window += 1
                self.slot.set()
            elif kind == "error":
                self.errors += 1
        self.closed_early = True
        self.slot.set()

    async def send_loop(self, payload: str) -> None:
        while not self.closed_early:
            now = time.monotonic()
            if now >= self.window.end:
                return
            if self.outstanding >= self.limit:
                self.slot.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.slot.wait(), self.window.end - now)
                continue
            self.sent += 1
            await self.ws.send_str(
                f'{{"type":"data","id":"{self.sent}","payload":"{payload}"}}')


async def _settle(flooders: list[_Flooder], *, limit: float = 10.0) -> None:
    """After the window: wait for the acks, then until nothing more arrives."""
    deadline = time.monotonic() + limit
    for f in flooders:
        while f.outstanding > 0 and not f.closed_early:
            f.slot.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(f.slot.wait(), remaining)
    last = -1
    while time.monotonic() < deadline:
        total = sum(f.received for f in flooders)
        if total == last:
            return
        last = total
        await asyncio.sleep(0.3)


async def _flood(spec: Spec, http: aiohttp.ClientSession, stdin: asyncio.StreamReader) -> None:
    room = spec.rooms[0]
    joins = [_join_text(spec, room, f"{spec.prefix}{i}") for i in range(spec.per_room)]
    joined = [await _connect_and_join(http, spec, join) for join in joins]
    window = _Window()
    flooders = [_Flooder(ws=ws, window=window, limit=spec.window) for ws, _, _ in joined]
    readers = [asyncio.create_task(f.read_loop()) for f in flooders]
    try:
        _emit("ready", clients=len(flooders))
        await _await_word(stdin, "go")
        cpu0 = _cpu_self()
        window.start = time.monotonic()
        window.end = window.start + spec.duration
        payload = "x" * spec.payload_bytes
        await asyncio.gather(*(f.send_loop(payload) for f in flooders))
        await _settle(flooders)
        _emit("result",
              sent=sum(f.sent for f in flooders),
              acked=sum(f.acked for f in flooders),
              acked_in_window=sum(f.acked_in_window for f in flooders),
              received=sum(f.received for f in flooders),
              received_in_window=sum(f.received_in_window for f in flooders),
              errors=sum(f.errors for f in flooders),
              closed_early=sum(f.closed_early for f in flooders),
              client_cpu_seconds=_cpu_self() - cpu0)
        await _await_word(stdin, "quit")
    finally:
        await _close_all([f.ws for f in flooders])
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


# -- joins -----------------------------------------------------------------
async def _joins(spec: Spec, http: aiohttp.ClientSession) -> None:
    connect_ms: list[float] = []
    join_ms: list[float] = []
    for rnd in range(spec.rounds):
        texts = [_join_text(spec, room, f"{spec.prefix}{rnd}-{room}-{i}")
                 for room in spec.rooms for i in range(spec.per_room)]
        results = await asyncio.wait_for(
            asyncio.gather(*(_connect_and_join(http, spec, t) for t in texts),
                           return_exceptions=True), 60.0)
        sockets = [r[0] for r in results if not isinstance(r, BaseException)]
        failures = [repr(r) for r in results if isinstance(r, BaseException)]
        await _close_all(sockets)
        if failures:
            raise SystemExit(f"{len(failures)} joins failed, first: {failures[0]}")
        for _, to_joined, join_to_joined in (r for r in results
                                             if not isinstance(r, BaseException)):
            connect_ms.append(to_joined * 1000)
            join_ms.append(join_to_joined * 1000)
        await asyncio.sleep(0.3)
    _emit("result", connect_to_joined_ms=connect_ms, join_to_joined_ms=join_ms)


# -- idle ------------------------------------------------------------------
async def _idle(spec: Spec, http: aiohttp.ClientSession, stdin: asyncio.StreamReader) -> None:
    limit = asyncio.Semaphore(spec.concurrency)
    sockets: list[aiohttp.ClientWebSocketResponse] = []

    async def one(text: str) -> None:
        async with limit:
            ws, _, _ = await _connect_and_join(http, spec, text)
            sockets.append(ws)

    texts = [_join_text(spec, room, f"{spec.prefix}{room}-{i}")
             for room in spec.rooms for i in range(spec.per_room)]
    try:
        await asyncio.wait_for(asyncio.gather(*(one(t) for t in texts)), 60.0)
        _emit("ready", clients=len(sockets))
        await _await_word(stdin, "quit")
    finally:
        await _close_all(sockets)


async def main(spec: Spec) -> None:
    stdin = await _stdin()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        if spec.mode == "flood":
            await _flood(spec, http, stdin)
        elif spec.mode == "joins":
            await _joins(spec, http)
        elif spec.mode == "idle":
            await _idle(spec, http, stdin)
        else:
            raise SystemExit(f"unknown mode {spec.mode!r}")


if __name__ == "__main__":
    asyncio.run(main(Spec(**json.loads(sys.argv[1]))))
