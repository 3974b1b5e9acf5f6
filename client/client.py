"""A Python client for Parley: join with a token, publish aiortc tracks, receive tracks and data.

It is what the tests, bots and the load generator (client/loadtest.py) use::

    client = ParleyClient("http://127.0.0.1:8080", token)
    await client.connect()
    await client.publish(VideoStreamTrack(), AudioStreamTrack())
    remote = await client.next_track()        # a RemoteTrack with .track (aiortc)
    await client.send_data({"text": "hi"})
    await client.close()

``close()`` is idempotent; the client owns its reader task, its reconnection task and
both peer connections.

When the socket drops, or the node asks it to (``reconnect``, close 4010), the client
reconnects by itself (client/reconnect.py): it joins again with its resume token, so it
keeps its participant id and, on stage, its place; it publishes its tracks again and
answers the new subscriber offer. Given several node URLs, it moves to the next one when
a node is draining or does not hold the room. ``rejoined`` receives each later ``joined``.

When one media connection fails (``connection-failed``, or its own publish connection
failing), the socket stays: the client publishes the same tracks again on a new publish
connection (retrying with the same back-off while that is refused), or answers the
node's next subscriber offer on a new subscribe connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)

from client.counting import AudioFrameCounter, VideoFrameCounter
from client.hooks import (
    close_late_candidates,
    close_peer_connection,
    end_consent_of_closed_connections,
    redirect_keyframe_requests,
    replace_jitter_buffer,
)
from client.light import LightReceiver
from client.reconnect import (
    FINAL_CLOSE_CODES,
    FINAL_DISCONNECTS,
    NEXT_NODE_CODES,
    RECONNECT,
    Nodes,
    Republishable,
    ResumeState,
    delay,
)

PROTOCOL_VERSION = 1
"""The version of the wire protocol (docs/protocol.md) this client speaks in ``join``."""


class ClientError(Exception):
    """The server refused a request; ``code`` is the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True, kw_only=True)
class RemoteTrack:
    track: MediaStreamTrack
    track_id: str
    participant: str
    kind: str
    mid: str


class ParleyClient:
    def __init__(self, url: str | Sequence[str], token: str, *, media: bool = True,
                 decode: bool = True, reconnect: bool = True,
                 light: LightReceiver | None = None) -> None:
        """``url``: a node, or several of one cluster (the first is used until a node
        sends the client on). ``decode=False``: remote tracks are reassembled and counted,
        never decoded (``frame_counts``, ``first_frame_at``); for load generation.
        ``reconnect=False``: a lost socket ends the client. ``light``: every RTP packet
        the subscribe connection receives goes to it (client/light.py) instead of
        aiortc's receivers; no track delivers anything."""
        close_late_candidates()  # a connection closed while gathering leaves no socket
        end_consent_of_closed_connections()  # nor one closed while it connects
        self._nodes = Nodes([url] if isinstance(url, str) else list(url))
        self._token = token
        self._auto = reconnect
        self._resume = ResumeState()
        self._published: list[tuple[MediaStreamTrack, str]] = []
        """What this client publishes, to publish again after a reconnection."""
        self._live = False
        """Joined on the current socket: losing it means reconnecting."""
        self._soon = False
        """The node asked for a reconnection (``reconnect``, 4010): no back-off."""
        self._final = False
        """The node ended the session for good (removed, replaced, room closed)."""
        self._reconnector: asyncio.Task[None] | None = None
        self.rejoined: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        """The ``joined`` reply of every reconnection, in order."""
        self.reconnects = 0
        self.republished = 0
        """Publish connections replaced after a failure, the socket kept."""
        self._media = media
        self._decode = decode
        self.light = light
        self.frame_counts: dict[str, int] = {}
        self.first_frame_at: dict[str, float] = {}
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.joined: dict[str, Any] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        """Every server message that is not a reply, in order."""
        self.data: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        """Data messages from other participants (data channel or socket)."""
        self.tracks: asyncio.Queue[RemoteTrack] = asyncio.Queue()
        self.remote: dict[str, RemoteTrack] = {}
        self.publisher: RTCPeerConnection | None = None
        self.subscriber: RTCPeerConnection | None = None
        self._mapping: dict[str, dict[str, Any]] = {}
        self._config = RTCConfiguration(iceServers=[])
        self._channel: Any = None
        self.closed = False

    @property
    def participant_id(self) -> str:
        return str(self.joined["participant"]["id"])

    # -- connection ------------------------------------------------------------
    async def connect(self) -> dict[str, Any]:
        self._http = aiohttp.ClientSession()
        return await self._join(self._nodes.current)

    async def _join(self, url: str) -> dict[str, Any]:
        """Open a socket to ``url`` and join (resuming when a token is still valid)."""
        assert self._http is not None
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()  # a previous attempt's socket
        self._ws = await self._http.ws_connect(url, heartbeat=10.0)
        self._reader = asyncio.get_running_loop().create_task(self._read_loop(self._ws))
        message: dict[str, Any] = {"type": "join", "token": self._token,
                                   "version": PROTOCOL_VERSION, "media": self._media}
        resume = self._resume.current()
        if resume is not None:
            message["resume"] = resume
        try:
            joined = await self.request(message)
        except BaseException:
            await self._ws.close()
            raise
        self.joined = joined
        self._resume.update(joined)
        self._live, self._soon = True, False
        servers = [RTCIceServer(urls=s["urls"], username=s.get("username"),
                                credential=s.get("credential"))
                   for s in joined.get("ice_servers", [])]
        self._config = RTCConfiguration(iceServers=servers,
                                        bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        return joined

    # -- reconnecting ----------------------------------------------------------
    def _lost(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The reader saw its socket end: reconnect unless the session is over."""
        if ws is not self._ws or not self._live or self.closed:
            return
        self._live = False
        code = ws.close_code or 0
        if not self._auto or self._final or code in FINAL_CLOSE_CODES or code == 1000:
            return
        self._soon = self._soon or code == RECONNECT
        self._reconnector = asyncio.get_running_loop().create_task(
            self._reconnect(), name="client-reconnect")

    async def _reconnect(self) -> None:
        await self._drop_media()
        url = self._nodes.next() if self._soon and len(self._nodes.urls) > 1 \
            else self._nodes.current
        attempt = 0
        while not self.closed:
            attempt += 1
            await asyncio.sleep(delay(attempt, soon=self._soon))
            try:
                joined = await self._join(url)
            except ClientError as err:
                if err.code not in NEXT_NODE_CODES:
                    return  # refused for good (token, removed, full)
                url = self._nodes.next()
                continue
            except (aiohttp.ClientError, ConnectionError, TimeoutError):
                url = self._nodes.next()  # refused, draining (503) or gone: the next node
                continue
            self.reconnects += 1
            await self._republish(joined)
            self.rejoined.put_nowait(joined)
            return

    async def _drop_media(self) -> None:
        """The connections of the lost session are useless: close them."""
        pcs, self.publisher, self.subscriber = (self.publisher, self.subscriber), None, None
        self._channel, self._mapping = None, {}
        self.remote.clear()
        for pc in pcs:
            if pc is not None:
                await close_peer_connection(pc)

    async def _publish_again(self) -> None:
        """Publish what was published on a new connection, on the same socket."""
        published, self._published = self._published, []
        tracks, sources = zip(*published, strict=True)
        attempt = 0
        while not self.closed and self._live and self.publisher is None:
            try:
                await self.publish(*tracks, sources=list(sources))
            except (ClientError, ConnectionError, TimeoutError):
                pc, self.publisher, self._published = self.publisher, None, []
                if pc is not None:
                    await close_peer_connection(pc)
                attempt += 1
                await asyncio.sleep(delay(attempt, soon=False))
                continue
            self.republished += 1
            return
        if self.publisher is None and not self._published:
            self._published = published  # for the reconnection that takes over

    async def _republish(self, joined: dict[str, Any]) -> None:
        if self._published and joined["grants"].get("can_publish"):
            tracks, sources = zip(*self._published, strict=True)
            self._published = []
            await self.publish(*tracks, sources=list(sources))

    async def request(self, message: dict[str, Any], timeout: float = 20.0) -> dict[str, Any]:
        """Send a message with a fresh id and wait for its reply (errors raise ClientError)."""
        msg_id = str(next(self._ids))
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        await self.send({**message, "id": msg_id})
        try:
            reply = await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(msg_id, None)
        if reply["type"] == "error":
            raise ClientError(reply["code"], reply["message"])
        return reply

    async def send(self, message: dict[str, Any]) -> None:
        assert self._ws is not None, "connect() first"
        await self._ws.send_str(json.dumps(message))

    async def _read_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            future = self._pending.get(str(data.get("id"))) if "id" in data else None
            if future is not None and not future.done():
                future.set_result(data)
                continue
            self._on_event(data)
        if ws is self._ws:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("signalling socket closed"))
        self._lost(ws)

    def _on_event(self, data: dict[str, Any]) -> None:
        mtype = data["type"]
        if mtype == "offer" and data.get("target") == "subscriber":
            self._spawn(self._answer(data))
        elif mtype == "data":
            self.data.put_nowait(data)
        elif mtype == "resume-token":
            self._resume.update(data)
        elif mtype == "reconnect":
            self._soon = True
        elif mtype == "disconnect" and data.get("reason") in FINAL_DISCONNECTS:
            self._final = True
        elif mtype == "connection-failed":
            self._media_failed(str(data.get("target")))
        self.events.put_nowait(data)

    def _media_failed(self, target: str) -> None:
        """One media connection is gone (the node closed its side): drop ours. The node's
        next subscriber offer, handled after this, starts a new subscribe connection."""
        if target == "subscriber":
            pc, self.subscriber = self.subscriber, None
            self._channel, self._mapping = None, {}
            self.remote.clear()
        elif target == "publisher":
            pc, self.publisher = self.publisher, None
            if pc is not None and self._published:
                self._spawn(self._publish_again())
        else:
            return
        if pc is not None:
            self._spawn(close_peer_connection(pc))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def next_event(self, mtype: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for the next server event of ``mtype``, skipping others."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if event["type"] == mtype:
                    return event

    async def next_track(self, timeout: float = 10.0) -> RemoteTrack:
        return await asyncio.wait_for(self.tracks.get(), timeout)

    # -- subscribing -----------------------------------------------------------
    def _ensure_subscriber(self) -> RTCPeerConnection:
        if self.subscriber is None:
            pc = RTCPeerConnection(self._config)

            @pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                transceiver = next((t for t in pc.getTransceivers()
                                    if t.receiver.track is track), None)
                mid = str(transceiver.mid) if transceiver is not None else ""
                if not self._decode and self.light is None and transceiver is not None:
                    self._count_frames(transceiver.receiver, track.kind, mid)
                info = self._mapping.get(mid, {})
                remote = RemoteTrack(track=track, track_id=str(info.get("track", "")),
                                     participant=str(info.get("participant", "")),
                                     kind=track.kind, mid=mid)
                self.remote[mid] = remote
                self.tracks.put_nowait(remote)

            @pc.on("datachannel")
            def on_channel(channel: Any) -> None:
                self._channel = channel
                channel.on("message", self._on_channel_message)

            self.subscriber = pc
        return self.subscriber

    def _count_frames(self, receiver: Any, kind: str, mid: str) -> None:
        def counted(keyframe: bool) -> None:
            if mid not in self.first_frame_at:
                if not keyframe:
                    return
                self.first_frame_at[mid] = time.perf_counter()
            self.frame_counts[mid] = self.frame_counts.get(mid, 0) + 1

        counter = AudioFrameCounter(counted) if kind == "audio" else VideoFrameCounter(counted)
        replace_jitter_buffer(receiver, counter)

    def _on_channel_message(self, message: Any) -> None:
        if isinstance(message, str):
            self.data.put_nowait({"type": "data", **json.loads(message)})

    async def _answer(self, offer: dict[str, Any]) -> None:
        ws = self._ws
        pc = self._ensure_subscriber()
        try:
            await self._apply_offer(pc, offer)
        except Exception:
            if not self.closed and ws is self._ws and self._live and pc is self.subscriber:
                # not merely the session, or the subscribe connection, it belonged to
                # going away (a failed connection is dropped, and the node offers anew)
                raise

    async def _apply_offer(self, pc: RTCPeerConnection, offer: dict[str, Any]) -> None:
        self._mapping = offer.get("tracks", {})
        for mid, remote in list(self.remote.items()):
            info = self._mapping.get(mid)
            if info is not None and info.get("track") != remote.track_id:
                self.first_frame_at.pop(mid, None)  # the m-line now carries another track
                self.remote[mid] = RemoteTrack(
                    track=remote.track, track_id=str(info.get("track", "")),
                    participant=str(info.get("participant", "")), kind=remote.kind, mid=mid)
                self.tracks.put_nowait(self.remote[mid])
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        if self.light is not None:
            self.light.attach(pc)
        await pc.setLocalDescription(await pc.createAnswer())
        await self.request({"type": "answer", "sdp": pc.localDescription.sdp})

    def track_for(self, track_id: str) -> RemoteTrack | None:
        return next((r for r in self.remote.values() if r.track_id == track_id), None)

    # -- publishing ------------------------------------------------------------
    async def publish(self, *tracks: MediaStreamTrack,
                      sources: list[str] | None = None) -> list[dict[str, Any]]:
        """Publish tracks on the publish connection; returns the server's track infos."""
        if self.publisher is None:
            self.publisher = self._new_publisher()
        pc = self.publisher
        added = [pc.addTransceiver(Republishable(t), direction="sendonly") for t in tracks]
        self._published += [(t, sources[i] if sources and i < len(sources) else "")
                            for i, t in enumerate(tracks)]
        for transceiver, track in zip(added, tracks, strict=True):
            restart = getattr(track, "restart", None)
            if callable(restart):  # pre-encoded: a key-frame request restarts the clip
                redirect_keyframe_requests(transceiver.sender, restart)
        return await self._offer(added, sources)

    def _new_publisher(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(self._config)

        @pc.on("connectionstatechange")
        def changed() -> None:
            # Failed on this side first (the node has not noticed): publish again on a
            # new connection; the node replaces its side when the new offer comes.
            if pc is self.publisher and pc.connectionState == "failed":
                self._media_failed("publisher")

        return pc

    async def _offer(self, added: list[Any], sources: list[str] | None) -> list[dict[str, Any]]:
        pc = self.publisher
        assert pc is not None
        await pc.setLocalDescription(await pc.createOffer())
        meta = []
        for i, transceiver in enumerate(added):
            source = sources[i] if sources and i < len(sources) else ""
            meta.append({"mid": transceiver.mid, "source": source})
        reply = await self.request({"type": "offer", "sdp": pc.localDescription.sdp,
                                    "tracks": meta})
        await pc.setRemoteDescription(RTCSessionDescription(sdp=reply["sdp"], type="answer"))
        tracks: list[dict[str, Any]] = reply["tracks"]
        return tracks

    async def send_data(self, payload: Any, *, topic: str = "",
                        to: list[str] | None = None) -> None:
        """Over the data channel when open, else over the signalling socket."""
        message: dict[str, Any] = {"payload": payload, "topic": topic}
        if to is not None:
            message["to"] = to
        if self._channel is not None and self._channel.readyState == "open":
            self._channel.send(json.dumps(message))
        else:
            await self.send({"type": "data", **message})

    # -- leaving ---------------------------------------------------------------
    async def leave(self) -> None:
        self._live = False  # the socket closing after this is not a loss
        with contextlib.suppress(ClientError, ConnectionError, asyncio.TimeoutError):
            await self.request({"type": "leave"}, timeout=5.0)
        await self.close()

    async def close(self) -> None:
        """Close both peer connections and the socket. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._reconnector is not None:
            self._reconnector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnector
        for pc in (self.publisher, self.subscriber):
            if pc is not None:
                await close_peer_connection(pc)
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
