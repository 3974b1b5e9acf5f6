"""The protocol fuzzer's sockets: fuzzed connections that check every server frame, and
a victim in another room that measures how promptly the node answers it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from conference.errors import ConferenceCode, SfuCode
from fuzz.known import known_bug
from signaling.errors import CloseCode, ErrorCode
from tests.conftest import NodeHarness, token
from tests.fuzz.frames import FUZZ_ROOMS, Frame, FrameMaker, Pool

ERROR_CODES = frozenset(code.value for code in (*ErrorCode, *ConferenceCode, *SfuCode))
"""Every wire code: the edge's own and the domain's (signaling/errors.py WireCode)."""
CLEAN_CLOSES = frozenset({CloseCode.NORMAL, CloseCode.MESSAGE_TOO_BIG, CloseCode.AUTH_FAILED,
                          CloseCode.JOIN_TIMEOUT, CloseCode.REPLACED, CloseCode.REMOVED,
                          CloseCode.JOIN_REFUSED})
"""Close codes a fuzzed socket may get; 4003 only where the rate limit is the default,
1007 only after a text frame that is not UTF-8."""
SYNC_TIMEOUT = 30.0


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(text: str) -> Any:
    """RFC 8259 JSON: Python's NaN, Infinity and -Infinity are refused."""
    return json.loads(text, parse_constant=_reject_constant)


@dataclass
class Findings:
    """What a fuzzing run saw. ``failures``, by kind, are what the test asserts empty;
    ``known`` counts the bugs of fuzz/known.py, which their own tests track."""

    seed: int
    failures: dict[str, list[str]] = field(default_factory=dict)
    failure_counts: Counter[str] = field(default_factory=Counter)
    known: Counter[str] = field(default_factory=Counter)
    known_examples: dict[str, str] = field(default_factory=dict)
    frames: int = 0
    syncs: int = 0
    connections: int = 0
    replies: Counter[str] = field(default_factory=Counter)
    closes: Counter[int] = field(default_factory=Counter)

    def fail(self, kind: str, detail: str, *, sent: str = "", received: str = "") -> None:
        """Record a failure of ``kind``, unless it is a known bug (then count it)."""
        bug = known_bug(f"{kind}\n{received}")
        if bug is not None:
            self.count_known(bug.name, f"sent {sent[:400]!r} got {received[:400]!r}")
            return
        self.failure_counts[kind] += 1
        examples = self.failures.setdefault(kind, [])
        if len(examples) < 3:
            examples.append(f"[seed {self.seed}] {detail}")

    def count_known(self, name: str, example: str) -> None:
        self.known[name] += 1
        self.known_examples.setdefault(name, example)

    def report(self) -> str:
        return "\n".join(f"{kind} ({self.failure_counts[kind]} times):\n  " + "\n  ".join(ex)
                         for kind, ex in self.failures.items())


class Budget:
    """Frames left to send, shared by the slots of a phase."""

    def __init__(self, frames: int) -> None:
        self.left = frames

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    def give_back(self) -> None:
        """The frame could not be sent (the socket had closed)."""
        self.left += 1


class Conn:
    """One fuzzed connection; its reader task checks every frame the node sends."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, label: str, findings: Findings,
                 pool: Pool, extra_closes: frozenset[int],
                 expect_only: frozenset[str] | None = None) -> None:
        self.ws = ws
        self.label = label
        self.findings = findings
        self.pool = pool
        self.allowed_closes = CLEAN_CLOSES | extra_closes
        self.expect_only = expect_only
        self.seq = 0
        self.closed = asyncio.Event()
        self.closing = False
        """We are closing it ourselves."""
        self.joined: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.pongs: dict[str, asyncio.Future[None]] = {}
        self.recent: deque[str] = deque(maxlen=64)
        self.errors = 0
        self.may_reset = False
        """A frame over twice the size limit was sent: the node may reset the connection."""
        self.reader = asyncio.get_running_loop().create_task(self._read(), name=label)

    def remember(self, frame: Frame) -> None:
        text = frame.data if isinstance(frame.data, str) else repr(frame.data)
        self.recent.append(text if len(text) < 600
                           else f"{text[:300]}…({len(text)} chars)…{text[-200:]}")

    def _sent(self, msg_id: Any = None) -> str:
        """The frame an error answers (found by its id), else the last frames sent."""
        if isinstance(msg_id, str):
            needles = (json.dumps(msg_id), json.dumps(msg_id, ensure_ascii=False))
            for text in reversed(self.recent):
                if any(f'"id": {n}' in text or f'"id":{n}' in text for n in needles):
                    return text
        return " | ".join(list(self.recent)[-3:])

    def _fail(self, kind: str, what: str, *, msg_id: Any = None, received: str = "") -> None:
        sent = self._sent(msg_id)
        self.findings.fail(kind, f"{self.label}: {what}; sent {sent!r}", sent=sent,
                           received=received)

    async def _read(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                self._check(msg.data)
            elif msg.type is aiohttp.WSMsgType.CLOSE:
                self._closed_with(msg.data, msg.extra)
                break
            elif msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                              aiohttp.WSMsgType.ERROR):
                if not self.closing and not self.may_reset:
                    self._fail("connection ended without a close frame",
                               f"{msg.type.name} {msg.data!r}")
                break
            else:
                self._fail("non-text frame from the node", msg.type.name)
        self.closed.set()
        if not self.joined.done():
            self.joined.set_result(False)
        for pong in self.pongs.values():
            if not pong.done():
                pong.set_result(None)

    def _closed_with(self, code: int, reason: str) -> None:
        self.findings.closes[code] += 1
        if code not in self.allowed_closes:
            self._fail(f"close code {code}", f"closed with {code} {reason!r}")
        if code in (CloseCode.AUTH_FAILED, CloseCode.JOIN_REFUSED) and reason not in ERROR_CODES:
            self._fail("close reason not a code", f"close {code} with reason {reason!r}")

    def _check(self, text: str) -> None:
        findings = self.findings
        try:
            msg = strict_json(text)
        except (ValueError, RecursionError) as exc:
            self._fail("server frame not strict JSON", f"{exc}: {text[:300]!r}", received=text)
            try:
                msg = json.loads(text)
            except (ValueError, RecursionError):
                return
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            self._fail("server frame not a typed object", text[:300], received=text)
            return
        self.seq += 1
        if msg.get("seq") != self.seq:
            self._fail("seq gap", f"seq {msg.get('seq')!r}, expected {self.seq}")
            self.seq = msg["seq"] if isinstance(msg.get("seq"), int) else self.seq
        mtype = msg["type"]
        if self.expect_only is not None and mtype not in self.expect_only:
            self._fail("victim got a message", text[:300], received=text)
        if mtype == "error":
            self._check_error(msg)
        elif mtype == "pong" and msg.get("id") in self.pongs:
            pong = self.pongs.pop(msg["id"])
            if not pong.done():
                pong.set_result(None)
        elif mtype == "joined" and not self.joined.done():
            self.joined.set_result(True)
        findings.replies[mtype] += 1
        self.pool.learn(msg)

    def _check_error(self, msg: dict[str, Any]) -> None:
        code, msg_id = msg.get("code"), msg.get("id")
        self.errors += 1
        self.findings.replies[f"error:{code}"] += 1
        if code not in ERROR_CODES:
            self._fail("undocumented error code", repr(code), msg_id=msg_id)
        elif code == ErrorCode.INTERNAL_ERROR:
            self._fail("internal_error", repr(msg), msg_id=msg_id, received=json.dumps(msg))
        if not isinstance(msg.get("message"), str):
            self._fail("error without a message", repr(msg))
        if msg_id is not None and not (isinstance(msg_id, str) and len(msg_id) <= 64):
            self._fail("error id not a short string", repr(msg_id))

    async def send(self, frame: Frame) -> bool:
        """Send one frame; False once the connection is gone."""
        if self.closed.is_set() or self.ws.closed:
            return False
        self.remember(frame)
        self.may_reset |= frame.may_reset
        try:
            if frame.kind == "text":
                assert isinstance(frame.data, str)
                await self.ws.send_str(frame.data)
            elif frame.kind == "binary":
                assert isinstance(frame.data, bytes)
                await self.ws.send_bytes(frame.data)
            else:
                assert isinstance(frame.data, bytes)
                await self.ws.send_frame(frame.data, aiohttp.WSMsgType.TEXT)
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            return False
        return True

    async def sync(self, n: int, timeout: float, *, strict: bool) -> None:
        """Ping and wait for the pong: every frame sent before it has been handled."""
        msg_id = f"sync-{n}"
        pong = asyncio.get_running_loop().create_future()
        self.pongs[msg_id] = pong
        if not await self.send(Frame("text", json.dumps({"type": "ping", "id": msg_id}))):
            return
        self.findings.syncs += 1
        try:
            await asyncio.wait_for(pong, timeout)
        except TimeoutError:
            self.pongs.pop(msg_id, None)
            if strict and not self.closed.is_set():
                self._fail("socket stalled", f"no pong within {timeout} s")

    async def close(self) -> None:
        self.closing = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


@dataclass(frozen=True)
class Phase:
    """One fuzzing phase against one node."""

    name: str
    frames: int
    slots: int
    media_frames: int = 0
    """Frames of the one slot that joins with media (SDP garbage); 0 for none."""
    rate_limited: bool = False
    """The node has the default rate limit: syncs may be dropped, 4003 is a clean close."""


async def _connect(h: NodeHarness, maker: FrameMaker, label: str, findings: Findings,
                   phase: Phase) -> Conn:
    path = "/rtc"
    if maker.rng.random() < 0.1:
        path += "?" + maker.rng.choice(
            [f"access_token={maker.good_token()[:7000]}",
             f"access_token={maker.token()[:7000]}&room=fz1", "room=victim",
             f"access_token={'x' * 7000}", "access_token=&room="])
        # aiohttp refuses request lines over 8190 bytes (HTTP 400) before the node sees them
    ws = await h.http.ws_connect(h.url(path), max_msg_size=0)
    extra = {CloseCode.RATE_LIMITED} if phase.rate_limited else set()
    findings.connections += 1
    return Conn(ws, label, findings, maker.pool, frozenset({*extra, 1007}))


async def _join(conn: Conn, maker: FrameMaker) -> None:
    rng = maker.rng
    token = maker.good_token(room=rng.choice(FUZZ_ROOMS))
    await conn.send(Frame("text", json.dumps({"type": "join", "id": "j", "token": token,
                                              "media": maker.media})))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(conn.joined), 15)


async def run_slot(h: NodeHarness, slot: int, maker: FrameMaker, budget: Budget,
                   findings: Findings, phase: Phase) -> None:
    """Connect, maybe join, send frames until the socket closes; again until the budget
    is spent."""
    rng = maker.rng
    sync_every = 25
    while budget.left > 0:
        label = f"{phase.name}/slot{slot}/conn{findings.connections}"
        conn = await _connect(h, maker, label, findings, phase)
        try:
            if maker.media or rng.random() < 0.65:
                await _join(conn, maker)
            sent = 0
            while budget.take():
                frame = maker.frame()
                if not await conn.send(frame):
                    budget.give_back()
                    break
                findings.frames += 1
                sent += 1
                await asyncio.sleep(0)  # making frames is work too: let the node run
                if frame.closes:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(conn.closed.wait(), 10)
                    break
                burst = rng.randint(5, 120) if phase.rate_limited else sync_every
                if sent % burst == 0:
                    await conn.sync(sent, 1.0 if phase.rate_limited else SYNC_TIMEOUT,
                                    strict=not phase.rate_limited)
                    if conn.closed.is_set():
                        break
        finally:
            await conn.close()


@dataclass
class Victim:
    """A participant alone in its room that pings the node and times the pongs."""

    conn: Conn
    rtts: list[float] = field(default_factory=list)
    """Wall-clock seconds from each ping to its pong."""
    cpu_rtts: list[float] = field(default_factory=list)
    """CPU seconds the process spent meanwhile (whatever else the machine runs)."""
    unanswered: int = 0

    async def ping_until(self, stop: asyncio.Event, interval: float = 0.05) -> None:
        n = 0
        while not stop.is_set() and not self.conn.closed.is_set():
            n += 1
            msg_id = f"v{n}"
            pong = asyncio.get_running_loop().create_future()
            self.conn.pongs[msg_id] = pong
            started, cpu_started = time.perf_counter(), time.process_time()
            await self.conn.send(Frame("text", json.dumps({"type": "ping", "id": msg_id})))
            try:
                await asyncio.wait_for(pong, 10)
                self.rtts.append(time.perf_counter() - started)
                self.cpu_rtts.append(time.process_time() - cpu_started)
            except TimeoutError:
                self.unanswered += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)


async def start_victim(h: NodeHarness, findings: Findings) -> Victim:
    """Join the room ``victim``, where no fuzzed socket can go: it may only ever hear
    its own ``joined`` and pongs."""
    conn = Conn(await h.http.ws_connect(h.url("/rtc")), "victim", findings, Pool(),
                frozenset(), expect_only=frozenset({"joined", "pong"}))
    await conn.send(Frame("text", json.dumps({"type": "join", "id": "j", "media": False,
                                              "token": token("victim", "victim")})))
    assert await asyncio.wait_for(asyncio.shield(conn.joined), 10), "the victim could not join"
    return Victim(conn)
