"""A Janus VideoRoom client over Janus's HTTP API (long polling), for benchmarks.

Enough of the API for one publisher and many subscribers of one room:
``create`` a session, ``attach`` ``janus.plugin.videoroom``, then

- publisher: ``join`` (ptype ``publisher``), ``publish`` with an aiortc offer,
  Janus's answer back;
- subscriber: ``join`` (ptype ``subscriber``, the publisher's feed), Janus's
  offer, an aiortc answer sent with ``start``.

aiortc gathers every candidate before its description is ready and Janus puts
its own in its descriptions, so no trickle is needed. Each session polls its
events in one task, owned and cancelled by ``JanusSession.close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription

from client.light import LightReceiver

PLUGIN = "janus.plugin.videoroom"
_ids = itertools.count(1)


class JanusError(RuntimeError):
    """Janus answered a request with an error."""


class JanusSession:
    """One Janus session with one VideoRoom handle."""

    def __init__(self, base: str) -> None:
        self._base = base.rstrip("/")
        self._http = aiohttp.ClientSession()
        self._session = 0
        self.handle = 0
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._poller: asyncio.Task[None] | None = None
        self.closed = False

    async def open(self) -> None:
        created = await self._post(self._base, {"janus": "create"})
        self._session = int(created["data"]["id"])
        attached = await self._post(f"{self._base}/{self._session}",
                                    {"janus": "attach", "plugin": PLUGIN})
        self.handle = int(attached["data"]["id"])
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": f"t{next(_ids)}"}
        async with self._http.post(url, json=body,
                                   timeout=aiohttp.ClientTimeout(total=15)) as resp:
            reply: dict[str, Any] = await resp.json(content_type=None)
        if reply.get("janus") == "error":
            raise JanusError(str(reply.get("error")))
        return reply

    async def _poll(self) -> None:
        url = f"{self._base}/{self._session}?maxev=10"
        while True:
            try:
                async with self._http.get(url, timeout=aiohttp.ClientTimeout(total=40)) as resp:
                    events = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.2)
                continue
            for event in events if isinstance(events, list) else [events]:
                if not isinstance(event, dict):
                    continue  # Janus answers a poll on a destroyed session with null
                future = self._waiting.pop(str(event.get("transaction")), None)
                if future is not None and not future.done():
                    future.set_result(event)

    async def request(self, body: dict[str, Any], jsep: dict[str, Any] | None = None,
                      *, timeout: float = 20.0) -> dict[str, Any]:
        """A plugin message; returns the synchronous reply or, after an ack, the event."""
        transaction = f"t{next(_ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[transaction] = future
        message: dict[str, Any] = {"janus": "message", "body": body,
                                   "transaction": transaction}
        if jsep is not None:
            message["jsep"] = jsep
        try:
            async with self._http.post(f"{self._base}/{self._session}/{self.handle}",
                                       json=message,
                                       timeout=aiohttp.ClientTimeout(total=15)) as resp:
                reply: dict[str, Any] = await resp.json(content_type=None)
            if reply.get("janus") == "ack":
                reply = await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(transaction, None)
        data = reply.get("plugindata", {}).get("data", {})
        if reply.get("janus") == "error" or "error" in data:
            raise JanusError(str(reply.get("error") or data.get("error")))
        return reply

    async def close(self) -> None:
        """Destroy the session and stop polling. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._session:
            with contextlib.suppress(Exception):
                await self._post(f"{self._base}/{self._session}", {"janus": "destroy"})
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self._http.close()


def _jsep(description: RTCSessionDescription) -> dict[str, Any]:
    return {"type": description.type, "sdp": description.sdp}


async def create_room(base: str, room: int, *, bitrate: int = 0) -> None:
    """A VideoRoom for one publisher and any number of subscribers (no bitrate cap: 0)."""
    session = JanusSession(base)
    try:
        await session.open()
        await session.request({"request": "create", "room": room, "publishers": 1,
                               "bitrate": bitrate, "videocodec": "vp8", "audiocodec": "opus",
                               "notify_joining": False, "fir_freq": 0})
    finally:
        await session.close()


@dataclass
class JanusPublisher:
    session: JanusSession
    pc: RTCPeerConnection
    feed: int

    async def close(self) -> None:
        await self.pc.close()
        await self.session.close()


async def publish(base: str, room: int, pc: RTCPeerConnection) -> JanusPublisher:
    """Join ``room`` as its publisher with ``pc``'s tracks; returns the feed id."""
    session = JanusSession(base)
    try:
        await session.open()
        joined = await session.request({"request": "join", "ptype": "publisher", "room": room,
                                        "display": "bench"})
        feed = int(joined["plugindata"]["data"]["id"])
        await pc.setLocalDescription(await pc.createOffer())
        reply = await session.request({"request": "publish"}, _jsep(pc.localDescription))
        answer = reply["jsep"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"],
                                                            type=answer["type"]))
    except BaseException:
        await session.close()
        raise
    return JanusPublisher(session=session, pc=pc, feed=feed)


@dataclass
class JanusSubscriber:
    session: JanusSession
    pc: RTCPeerConnection
    light: LightReceiver

    async def close(self) -> None:
        await self.pc.close()
        await self.session.close()


async def janus_subscriber(args: dict[str, Any], index: int) -> JanusSubscriber:
    """A light subscriber of ``args["feed"]`` in ``args["room"]`` (client/pool.py factory)."""
    session = JanusSession(str(args["url"]))
    pc = RTCPeerConnection()
    light = LightReceiver()
    try:
        await session.open()
        joined = await session.request({"request": "join", "ptype": "subscriber",
                                        "room": int(args["room"]),
                                        "streams": [{"feed": int(args["feed"])}]})
        offer = joined["jsep"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        light.attach(pc)
        await pc.setLocalDescription(await pc.createAnswer())
        await session.request({"request": "start"}, _jsep(pc.localDescription))
    except BaseException:
        await pc.close()
        await session.close()
        raise
    return JanusSubscriber(session=session, pc=pc, light=light)
