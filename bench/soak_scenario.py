"""The soak's meeting: publishers, subscribers, a moderator, a guest and signalling-only churn.

One room on one node. Every action below changes something the node must later
undo; they run in a fixed rotation, one every ``interval`` seconds, so any minute
of the run sees the same mix:

- **subscriber**: a churning subscriber goes (alternately ``leave`` and a dropped
  socket, which the node holds for its resume window) and a fresh one joins;
- **mute**: a publisher's camera is muted, and unmuted the next time round;
- **stage**: the guest (a listener) asks to speak, the moderator approves and the
  guest publishes on a new connection; the next time the moderator moves it back
  to the audience and the guest closes that connection;
- **renegotiate**: a publisher adds a second video track (``screen``) on its
  connection, and the next time stops that transceiver and offers again;
- **publisher**: a publisher leaves and a new one takes its seat;
- **signalling**: a few sockets join without media, rename themselves and go
  (half with ``leave``, half by dropping the socket).

Every step waits with a timeout; a step that fails is counted and the run goes on.
A client whose peer connection closed by itself (aiortc gives a connection up when
its consent checks go unanswered) is counted as ``media_lost`` and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from client.client import ParleyClient
from client.media import EncodedClip, EncodedTrack
from signaling.auth import mint_token

KEY, SECRET = "soak", "soak-secret-0123456789abcdef0123456789"
ROOM = "soak"
STEP_TIMEOUT = 20.0
"""Seconds any one step of an action may take."""


def token(identity: str, role: str) -> str:
    return mint_token(key=KEY, secret=SECRET, room=ROOM, identity=identity, role=role,
                      ttl=24 * 3600)


class CountedTrack(EncodedTrack):
    """A pre-encoded clip that counts the frames it hands to its sender."""

    def __init__(self, clip: EncodedClip) -> None:
        super().__init__(clip)
        self.frames = 0

    async def recv(self) -> Any:
        packet = await super().recv()
        self.frames += 1
        return packet


def drain_events(client: ParleyClient) -> None:
    """Forget the events nobody waited for (the queue would grow for the whole run)."""
    while not client.events.empty():
        client.events.get_nowait()


@dataclass
class Seat:
    """A publisher and the ids of what it publishes."""

    client: ParleyClient
    camera: str
    muted: bool = False
    screen: dict[str, Any] | None = None
    """The second track's info (with its ``mid``) while it is published."""


@dataclass
class Meeting:
    """The room's clients; ``close()`` makes every one of them leave. Idempotent."""

    url: str
    clip: EncodedClip
    publishers: int
    subscribers: int
    steady: int
    """Subscribers that never churn: the received frame rate is measured on them."""
    churn_sockets: int = 2
    seats: list[Seat] = field(default_factory=list)
    listeners: list[ParleyClient] = field(default_factory=list)
    moderator: ParleyClient | None = None
    guest: ParleyClient | None = None
    guest_on_stage: bool = False
    failures: dict[str, int] = field(default_factory=dict)
    done: dict[str, int] = field(default_factory=dict)
    media_lost: dict[str, int] = field(default_factory=dict)
    """Clients replaced because a peer connection of theirs closed, by kind of client."""
    _retired_frames: int = 0
    """Frames counted by steady subscribers that were replaced."""
    _made: list[ParleyClient] = field(default_factory=list)
    """Every client not yet closed, wherever an interrupted step left it: closed at the end."""
    _tracks: list[CountedTrack] = field(default_factory=list)
    """Every track published in the run (one per publish: a few hundred an hour)."""
    _names: itertools.count[int] = field(default_factory=itertools.count)
    _rotation: itertools.count[int] = field(default_factory=itertools.count)
    _turns: dict[str, int] = field(default_factory=dict)
    _closed: bool = False

    def _name(self, prefix: str) -> str:
        return f"{prefix}-{next(self._names)}"

    def _turn(self, action: str) -> int:
        """How many times ``action`` ran before: toggles undo on the next turn what they did."""
        turn = self._turns.get(action, 0)
        self._turns[action] = turn + 1
        return turn

    async def _client(self, identity: str, role: str, *, media: bool = True) -> ParleyClient:
        client = ParleyClient(self.url, token(identity, role), media=media, decode=False,
                              reconnect=False)
        self._made = [c for c in self._made if not c.closed]
        self._made.append(client)
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                await client.connect()
        except BaseException:
            await client.close()
            raise
        return client

    async def _seat(self) -> Seat:
        client = await self._client(self._name("pub"), "speaker")
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                [info] = await client.publish(self._track(), sources=["camera"])
        except BaseException:
            await client.close()
            raise
        return Seat(client=client, camera=str(info["id"]))

    async def open(self) -> None:
        """Everyone joins: the moderator, the publishers, the subscribers and the guest."""
        self.moderator = await self._client("moderator", "moderator", media=False)
        for _ in range(self.publishers):
            self.seats.append(await self._seat())
        for _ in range(self.subscribers):
            self.listeners.append(await self._client(self._name("sub"), "listener"))
        self.guest = await self._client("guest", "listener")

    def steady_frames(self) -> int:
        """Video frames received so far by the subscribers that never churn."""
        counted = sum(sum(c.frame_counts.values()) for c in self.listeners[:self.steady])
        return self._retired_frames + counted

    def sent_frames(self) -> int:
        """Video frames every publisher of the run has sent so far."""
        return sum(t.frames for t in self._tracks)

    def _track(self) -> CountedTrack:
        track = CountedTrack(self.clip)
        self._tracks.append(track)
        return track

    # -- actions ---------------------------------------------------------------
    def actions(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        return [("subscriber", self.churn_subscriber), ("mute", self.toggle_mute),
                ("stage", self.toggle_stage), ("renegotiate", self.toggle_screen),
                ("publisher", self.replace_publisher), ("signalling", self.signalling_churn)]

    async def step(self) -> str:
        """Run the next action of the rotation; returns its name."""
        actions = self.actions()
        name, action = actions[next(self._rotation) % len(actions)]
        try:
            async with asyncio.timeout(3 * STEP_TIMEOUT):
                await self.heal()
                await action()
        except Exception as exc:  # counted: the soak goes on whatever one action does
            key = f"{name}: {type(exc).__name__}"
            self.failures[key] = self.failures.get(key, 0) + 1
        else:
            self.done[name] = self.done.get(name, 0) + 1
        return name

    async def heal(self) -> None:
        """Replace every client that lost a peer connection."""
        for i, seat in enumerate(self.seats):
            if _lost_media(seat.client):
                self._lost("publisher")
                await seat.client.leave()
                self.seats[i] = await self._seat()
        for i, client in enumerate(self.listeners):
            if _lost_media(client):
                self._lost("subscriber")
                fresh = await self._client(self._name("sub"), "listener")
                await client.leave()
                # No await from here on: a sample sees the old client or the new, not both.
                if i < self.steady:
                    self._retired_frames += sum(client.frame_counts.values())
                self.listeners[i] = fresh
        if self.guest is not None and _lost_media(self.guest):
            self._lost("guest")
            await self.guest.leave()
            self.guest, self.guest_on_stage = None, False
            self.guest = await self._client(self._name("guest"), "listener")

    def _lost(self, kind: str) -> None:
        self.media_lost[kind] = self.media_lost.get(kind, 0) + 1

    async def churn_subscriber(self) -> None:
        churning = len(self.listeners) - self.steady
        if churning <= 0:
            return
        turn = self._turn("subscriber")
        index = self.steady + turn % churning
        old = self.listeners[index]
        if turn % 2:
            await old.leave()
        else:
            await old.close()  # a dropped socket: held for the resume window
        self.listeners[index] = await self._client(self._name("sub"), "listener")

    async def toggle_mute(self) -> None:
        seat = self.seats[self._turn("mute") // 2 % len(self.seats)]
        seat.muted = not seat.muted
        await seat.client.request({"type": "mute-track", "track": seat.camera,
                                   "muted": seat.muted})

    async def toggle_stage(self) -> None:
        guest, moderator = self.guest, self.moderator
        assert guest is not None and moderator is not None
        drain_events(guest)
        drain_events(moderator)
        if not self.guest_on_stage:
            await guest.request({"type": "request-to-speak"})
            await moderator.next_event("speaker-request", timeout=STEP_TIMEOUT)
            await moderator.request({"type": "approve-speaker",
                                     "participant": guest.participant_id})
            await guest.next_event("permission-changed", timeout=STEP_TIMEOUT)
            self.guest_on_stage = True
            await guest.publish(self._track(), sources=["camera"])
            return
        await moderator.request({"type": "move-to-audience",
                                 "participant": guest.participant_id})
        await guest.next_event("permission-changed", timeout=STEP_TIMEOUT)
        self.guest_on_stage = False
        pc, guest.publisher = guest.publisher, None
        if pc is not None:  # the protocol's advice: a new connection next time on stage
            await pc.close()

    async def toggle_screen(self) -> None:
        seat = self.seats[self._turn("screen") // 2 % len(self.seats)]
        client = seat.client
        if seat.screen is None:
            [seat.screen] = await client.publish(self._track(), sources=["screen"])
            return
        mid, seat.screen = str(seat.screen["mid"]), None
        assert client.publisher is not None
        for transceiver in client.publisher.getTransceivers():
            if transceiver.mid == mid:
                await transceiver.stop()
        await client.publish()  # an offer with that m-line stopped unpublishes its track

    async def replace_publisher(self) -> None:
        index = self._turn("publisher") % len(self.seats)
        old = self.seats[index]
        await old.client.leave()
        self.seats[index] = await self._seat()

    async def signalling_churn(self) -> None:
        """Sockets that join without media, rename themselves and go."""
        async with aiohttp.ClientSession() as http:
            for n in range(self.churn_sockets):
                async with http.ws_connect(self.url.rstrip("/") + "/rtc") as ws:
                    identity = self._name("sig")
                    await ws.send_json({"type": "join", "id": "1", "media": False,
                                        "token": token(identity, "listener")})
                    await _reply(ws, "1")
                    await ws.send_json({"type": "update", "id": "2", "name": identity})
                    await _reply(ws, "2")
                    if n % 2 == 0:
                        await ws.send_json({"type": "leave", "id": "3"})
                        await _reply(ws, "3")

    # -- the end ---------------------------------------------------------------
    async def close(self) -> None:
        """Everyone leaves (with ``leave``), all at once."""
        if self._closed:
            return
        self._closed = True
        clients = [s.client for s in self.seats] + self.listeners
        clients += [c for c in (self.guest, self.moderator) if c is not None]
        await asyncio.gather(*(_leave(c) for c in clients))
        await asyncio.gather(*(_leave(c) for c in self._made if not c.closed))


async def _leave(client: ParleyClient) -> None:
    with contextlib.suppress(TimeoutError, ConnectionError, aiohttp.ClientError):
        async with asyncio.timeout(STEP_TIMEOUT):
            await client.leave()
    await client.close()


def _lost_media(client: ParleyClient) -> bool:
    return any(pc is not None and pc.connectionState in ("closed", "failed")
               for pc in (client.publisher, client.subscriber))


async def _reply(ws: aiohttp.ClientWebSocketResponse, msg_id: str) -> dict[str, Any]:
    """The reply to request ``msg_id`` (events before it are skipped)."""
    async with asyncio.timeout(STEP_TIMEOUT):
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"socket ended before reply {msg_id}: {msg.type}")
            data: dict[str, Any] = json.loads(msg.data)
            if data.get("id") == msg_id:
                if data["type"] == "error":
                    raise RuntimeError(f"refused: {data}")
                return data
