"""The relay: a client's socket on one node (the edge), its room on another (the owner).

The link protocol (signaling/link.py) carried over the bus
(conference/cluster/bus.py). On the edge, an :class:`EdgeSession` is the
connection's ``SessionPort``: it sends an ``open`` frame (the verified
claims and the join's parameters, never the token), then each validated
client message in order, then ``leave``. On the owner, an :class:`OwnerLink`
is the ``ClientLink`` of an ordinary ``ParticipantSession``: it sends each
encoded server message back (the edge's connection stamps ``seq`` as for a
local session) and ``close``. One task per owner link serves its frames in
order, as the connection's loop does for a local session.

Frames of one relayed session carry a sequence number per direction. Redis
pub/sub is at-most-once, so each end keeps the frames it sent until the other
acknowledges them: every heartbeat carries the last frame received in order
(``a``), and an end whose peer's acknowledgement lags behind what it sent sends
the rest again (go-back-N). A frame out of order is dropped and comes again; a
duplicate is dropped. So a Redis outage (frames dropped by the bus) loses
nothing: the session carries on when Redis is back. More than
``_UNACKED`` frames waiting for an acknowledgement end the session: the
participant leaves the room, the client is told ``reconnect`` (``relay_lost``)
and closed with ``RECONNECT`` (4010). Each end sends a heartbeat every
``cluster.relay_heartbeat_interval``; an end silent for ``cluster.relay_timeout``
is lost (``node_lost`` on the edge); while this node's bus subscription is down
(Redis unreachable: silence proves little) only after ``relay_timeout`` plus twice
``node_ttl``, and every end gets a fresh ``relay_timeout`` when it is back. A
frame for a session the receiver does not know is answered with ``reset``,
which ends the session the same way.

The relay also carries requests with a timeout (``request``/``serve``): the
admin API forwards actions to a room's owner with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict
from enum import StrEnum
from typing import Any

import msgspec

from conference.cluster.bus import Bus, Frame
from conference.cluster.config import ClusterConfig
from conference.errors import ConferenceCode, ConferenceError
from conference.events import LeaveReason
from conference.ids import Identity, NodeId, RoomName
from conference.permissions import Grants
from signaling.auth import Claims
from signaling.errors import CloseCode, SignalError
from signaling.link import ClientLink, SessionPort
from signaling.metrics import RelayMetrics
from signaling.node import Node
from signaling.protocol import MESSAGES, EncodedEvent, Message, encode
from signaling.session import ParticipantSession

log = logging.getLogger("parley.relay")

# Frame kinds. Edge → owner: open, msg, leave. Owner → edge: opened, refused, out, close.
# Both ways: hb, reset, req, res.
OPEN, MSG, LEAVE = "open", "msg", "leave"
OPENED, REFUSED, OUT, CLOSE = "opened", "refused", "out", "close"
HB, RESET, REQ, RES = "hb", "reset", "req", "res"

_encoder = msgspec.json.Encoder()
_UNACKED = 4096
"""Frames an end keeps for sending again; more unacknowledged ones end the session."""


class Lost(StrEnum):
    """Why a relayed session ended without either side asking: the ``reason`` of the
    ``reconnect`` message."""

    NODE_LOST = "node_lost"
    """The other node went silent (heartbeat timeout: dead, hung or cut off)."""
    RELAY_LOST = "relay_lost"
    """Frames were lost between the nodes, or the other node forgot the session."""


_LOST_REASONS = frozenset(r.value for r in Lost)


def claims_to_wire(claims: Claims) -> dict[str, Any]:
    return asdict(claims)


def claims_from_wire(data: dict[str, Any]) -> Claims:
    grants = dict(data["grants"])
    grants["room"] = RoomName(grants["room"])
    return Claims(key=str(data["key"]), identity=Identity(data["identity"]),
                  name=str(data["name"]), metadata=str(data["metadata"]),
                  grants=Grants(**grants), expires_at=float(data["expires_at"]),
                  jti=data.get("jti"), token_id=str(data["token_id"]))


class _End:
    """One end of a relayed session: numbering, liveness, the ``closed`` flag."""

    def __init__(self, relay: Relay, link: str, peer: NodeId) -> None:
        self.relay = relay
        self.link = link
        self.peer = peer
        self.heard = time.monotonic()
        self.closed = False
        self._sent = 0
        self._received = 0
        self._unacked: deque[Frame] = deque()
        """Frames sent and not yet acknowledged, oldest first."""

    def frame(self, kind: str, **fields: Any) -> None:
        self._sent += 1
        frame = {"k": kind, "l": self.link, "s": self._sent, **fields}
        self._unacked.append(frame)
        self.relay.send(self.peer, frame)
        if len(self._unacked) > _UNACKED and not self.closed:
            self.lost(Lost.RELAY_LOST)

    def heartbeat(self) -> None:
        self.relay.send(self.peer, {"k": HB, "l": self.link, "s": self._sent,
                                    "a": self._received})

    def receive(self, frame: Frame) -> None:
        self.heard = time.monotonic()
        seq = frame.get("s")
        if not isinstance(seq, int):
            return
        if frame["k"] == HB:
            self._acknowledged(frame.get("a"))
            return
        if seq != self._received + 1:
            return  # a duplicate, or out of order after a loss: it comes again
        self._received = seq
        self.on_frame(frame)

    def _acknowledged(self, ack: object) -> None:
        """The peer has every frame up to ``ack``; send the rest again (lost on the way,
        or in flight: the peer drops duplicates)."""
        if not isinstance(ack, int):
            return
        while self._unacked and self._unacked[0]["s"] <= ack:
            self._unacked.popleft()
        for frame in self._unacked:
            self.relay.send(self.peer, frame)

    def observe_latency(self, frame: Frame) -> None:
        sent = frame.get("w")
        if isinstance(sent, int | float):
            self.relay.metrics.latency.observe(max(0.0, time.time() - sent))
        self.relay.metrics.relayed_in.inc()

    def on_frame(self, frame: Frame) -> None:
        raise NotImplementedError

    def lost(self, reason: Lost) -> None:
        raise NotImplementedError

    def _end(self) -> None:
        self.closed = True
        self.relay.forget(self)


class EdgeSession(_End):
    """On the node holding the socket: the connection's ``SessionPort``."""

    def __init__(self, relay: Relay, link: str, owner: NodeId, client: ClientLink) -> None:
        super().__init__(relay, link, owner)
        self.client = client
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- SessionPort -------------------------------------------------------------------
    async def handle(self, message: Message) -> None:
        if self.closed:
            return
        self.frame(MSG, m=_encoder.encode(message).decode(), w=time.time())
        self.relay.metrics.relayed_out.inc()

    def leave(self, reason: LeaveReason) -> None:
        if self.closed:
            return
        self.frame(LEAVE, r=reason.value)
        self._end()

    # -- from the owner ------------------------------------------------------------------
    def on_frame(self, frame: Frame) -> None:
        kind = frame["k"]
        if kind == OUT:
            self.observe_latency(frame)
            self.client.send(EncodedEvent(type=str(frame["t"]), head=str(frame["h"])))
        elif kind == OPENED:
            self._settle(None)
        elif kind == REFUSED:
            self._end()
            self._settle(ConferenceError(ConferenceCode(frame["c"]), str(frame["m"])))
        elif kind == CLOSE:
            reason = str(frame.get("r", Lost.RELAY_LOST))
            if frame.get("c") == CloseCode.RECONNECT and reason in _LOST_REASONS:
                self.lost(Lost(reason))
                return
            self._end()  # a reason of the room's (``reconnect`` already sent), or final
            self.client.close(CloseCode(frame["c"]), reason)

    def _settle(self, error: ConferenceError | None) -> None:
        if self.opened.done():
            return
        if error is None:
            self.opened.set_result(None)
        else:
            self.opened.set_exception(error)

    def lost(self, reason: Lost) -> None:
        if self.closed:
            return
        self.relay.metrics.lost.labels(reason=reason.value).inc()
        log.info("relayed session lost", extra={"owner": self.peer, "reason": reason.value})
        self.frame(LEAVE, r=LeaveReason.DISCONNECTED.value)  # in case the owner still hears
        self._end()
        if not self.opened.done():
            self._settle(ConferenceError(ConferenceCode.CLUSTER_UNAVAILABLE,
                                         "the room's node was lost; retry the join"))
            return
        self.client.send(encode({"type": "reconnect", "reason": reason.value,
                                 "message": "the room's node was lost; join again"}))
        self.client.close(CloseCode.RECONNECT, reason.value)


class OwnerLink(_End):
    """On the node holding the room: the ``ClientLink`` of a ``ParticipantSession``."""

    def __init__(self, relay: Relay, link: str, edge: NodeId) -> None:
        super().__init__(relay, link, edge)
        self.session: ParticipantSession | None = None
        self._inbox: asyncio.Queue[Frame | None] = asyncio.Queue()

    def on_frame(self, frame: Frame) -> None:
        self._inbox.put_nowait(frame)

    async def run(self) -> None:
        """The link's task: serve open, messages and leave in order."""
        while (frame := await self._inbox.get()) is not None:
            kind = frame["k"]
            if kind == OPEN:
                await self._open(frame)
            elif kind == MSG and self.session is not None:
                self.observe_latency(frame)
                try:
                    message = MESSAGES.parse(str(frame["m"]))
                except SignalError:
                    continue  # the edge validated it; nothing else sends these
                await self.session.handle(message)
            elif kind == LEAVE:
                if self.session is not None:
                    self.session.leave(LeaveReason(frame["r"]))
                self._end()

    async def _open(self, frame: Frame) -> None:
        try:
            self.session = await ParticipantSession.open(
                self.relay.node, self, claims_from_wire(frame["claims"]),
                msg_id=frame.get("id"), version=int(frame["v"]), media=bool(frame["media"]),
                remote=frame.get("remote"), resume=frame.get("resume"))
        except ConferenceError as err:
            self.frame(REFUSED, c=err.code.value, m=err.message)
            self._end()
            return
        self.frame(OPENED)

    # -- ClientLink ----------------------------------------------------------------------
    def send(self, message: EncodedEvent) -> None:
        if self.closed:
            return
        self.frame(OUT, t=message.type, h=message.head, w=time.time())
        self.relay.metrics.relayed_out.inc()

    def close(self, code: CloseCode, reason: str) -> None:
        if self.closed:
            return
        self.frame(CLOSE, c=int(code), r=reason)
        self._end()

    def lost(self, reason: Lost) -> None:
        if self.closed:
            return
        self.relay.metrics.lost.labels(reason=reason.value).inc()
        log.info("relayed session lost", extra={"edge": self.peer, "reason": reason.value})
        if self.session is not None:
            self.session.leave(LeaveReason.HEARTBEAT_TIMEOUT if reason is Lost.NODE_LOST
                               else LeaveReason.DISCONNECTED)
        self.close(CloseCode.RECONNECT, reason.value)

    def _end(self) -> None:
        super()._end()
        self._inbox.put_nowait(None)


Service = Callable[[Any], Awaitable[Any]]
"""Serves one kind of request from another node: its body in, the answer's body out."""


class Relay:
    """This node's relayed sessions, both ends, and its requests to other nodes.

    Created by the app when the node is clustered. ``start()`` starts the ticker
    (``relay-ticker``: heartbeats and timeouts); owner links and request handlers run in
    tasks the relay holds. ``close()`` (from ``Node.close``, after the rooms) ends what is
    left, cancels and awaits every task and flushes the bus. Idempotent.
    """

    def __init__(self, node: Node, bus: Bus, config: ClusterConfig) -> None:
        self.node = node
        self.bus = bus
        self.config = config
        self.metrics = RelayMetrics(node.metrics_registry)
        self.edges: dict[str, EdgeSession] = {}
        self.owners: dict[str, OwnerLink] = {}
        self._requests: dict[str, asyncio.Future[Frame]] = {}
        self._services: dict[str, Service] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False
        self._placement = node.cluster.placement if node.cluster is not None else None
        bus.set_handler(self._on_frame)

    def start(self) -> None:
        if self._ticker is None and not self._closed:
            self._ticker = asyncio.get_running_loop().create_task(self._tick(),
                                                                  name="relay-ticker")

    def send(self, node: NodeId, frame: Frame) -> None:
        frame["n"] = self.node.id
        self.bus.send(node, frame)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def silent(self, node: NodeId) -> None:
        """``node`` did not answer in time: its rooms may be claimed elsewhere sooner
        (conference/cluster/placement.py, suspects)."""
        if self._placement is not None:
            self._placement.suspect(node)

    def suspected(self, node: NodeId) -> bool:
        return self._placement is not None and self._placement.suspected(node)

    def forget(self, end: _End) -> None:
        if isinstance(end, EdgeSession):
            self.edges.pop(end.link, None)
        else:
            self.owners.pop(end.link, None)
        self._count()

    def _count(self) -> None:
        self.metrics.sessions.labels(side="edge").set(len(self.edges))
        self.metrics.sessions.labels(side="owner").set(len(self.owners))

    # -- the edge ------------------------------------------------------------------------
    async def open(self, client: ClientLink, owner: NodeId, claims: Claims, *,
                   msg_id: str | None, version: int, media: bool,
                   remote: str | None, resume: str | None = None) -> EdgeSession:
        """Open the client's session on ``owner``; raises the owner's ``ConferenceError``
        (or ``cluster_unavailable`` when it does not answer within ``request_timeout``)."""
        started = time.perf_counter()
        edge = EdgeSession(self, secrets.token_urlsafe(12), owner, client)
        self.edges[edge.link] = edge
        self._count()
        edge.frame(OPEN, claims=claims_to_wire(claims), id=msg_id, v=version, media=media,
                   remote=remote, resume=resume)
        try:
            await asyncio.wait_for(asyncio.shield(edge.opened), self.config.request_timeout)
        except TimeoutError:
            edge.leave(LeaveReason.DISCONNECTED)
            self.silent(owner)
            raise ConferenceError(ConferenceCode.CLUSTER_UNAVAILABLE,
                                  "the room's node did not answer; retry the join") from None
        except asyncio.CancelledError:
            edge.leave(LeaveReason.DISCONNECTED)
            raise
        self.metrics.join_latency.observe(time.perf_counter() - started)
        return edge

    # -- frames --------------------------------------------------------------------------
    def _on_frame(self, frame: Frame) -> None:
        kind, link, sender = frame.get("k"), frame.get("l"), frame.get("n")
        if not isinstance(sender, str) or self._closed:
            return
        if self._placement is not None:
            self._placement.heard(NodeId(sender))
        if kind == REQ:
            self._spawn(self._answer(frame), "relay-request")
            return
        if kind == RES:
            future = self._requests.pop(str(frame.get("q")), None)
            if future is not None and not future.done():
                future.set_result(frame)
            return
        if not isinstance(link, str):
            return
        end: _End | None = self.edges.get(link) or self.owners.get(link)
        if end is None and kind == OPEN:
            owner_end = OwnerLink(self, link, NodeId(sender))
            self.owners[link] = end = owner_end
            self._count()
            self._spawn(owner_end.run(), "relay-session")
        if end is None or end.peer != sender:
            if kind != RESET:
                self.send(NodeId(sender), {"k": RESET, "l": link})
            return
        if kind == RESET:
            end.lost(Lost.RELAY_LOST)
        else:
            end.receive(frame)

    async def _tick(self) -> None:
        cut_off = False
        while True:
            await asyncio.sleep(self.config.relay_heartbeat_interval)
            now = time.monotonic()
            ends: list[_End] = [*self.edges.values(), *self.owners.values()]
            limit = self.config.relay_timeout
            if not self.bus.subscribed.is_set():  # Redis away: silence proves little
                cut_off = True
                limit += 2 * self.node.config.cluster.node_ttl
            for end in ends:
                if cut_off and limit == self.config.relay_timeout:
                    end.heard = now  # back: each end gets a whole relay_timeout again
                if now - end.heard > limit:
                    self.silent(end.peer)
                    end.lost(Lost.NODE_LOST)
                else:
                    end.heartbeat()
            cut_off = limit > self.config.relay_timeout

    # -- requests ------------------------------------------------------------------------
    def serve(self, op: str, service: Service) -> None:
        """Answer requests named ``op`` from other nodes."""
        self._services[op] = service

    async def request(self, node: NodeId, op: str, body: Any) -> Any:
        """Ask ``node``; its answer's body. ``cluster_unavailable`` when it does not answer
        within ``request_timeout`` or fails."""
        query = secrets.token_urlsafe(9)
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._requests[query] = future
        self.send(node, {"k": REQ, "q": query, "op": op, "b": body})
        try:
            answer = await asyncio.wait_for(future, self.config.request_timeout)
        except TimeoutError:
            self.metrics.requests.labels(outcome="failed").inc()
            raise ConferenceError(ConferenceCode.CLUSTER_UNAVAILABLE,
                                  f"node {node} did not answer") from None
        finally:
            self._requests.pop(query, None)
        if "e" in answer:
            self.metrics.requests.labels(outcome="failed").inc()
            raise ConferenceError(ConferenceCode.CLUSTER_UNAVAILABLE, str(answer["e"]))
        self.metrics.requests.labels(outcome="ok").inc()
        return answer.get("b")

    async def _answer(self, frame: Frame) -> None:
        service = self._services.get(str(frame.get("op")))
        reply: Frame = {"k": RES, "q": frame.get("q")}
        if service is None:
            reply["e"] = f"unknown request {frame.get('op')!r}"
        else:
            try:
                reply["b"] = await service(frame.get("b"))
            except Exception:
                log.exception("request failed", extra={"op": frame.get("op")})
                reply["e"] = "the request failed on the room's node"
        self.send(NodeId(str(frame["n"])), reply)

    async def close(self) -> None:
        if self._closed:
            return
        for edge in list(self.edges.values()):
            edge.leave(LeaveReason.SERVER_SHUTDOWN)
        for owner in list(self.owners.values()):
            if owner.session is not None:
                owner.session.leave(LeaveReason.SERVER_SHUTDOWN)
            owner.close(CloseCode.GOING_AWAY, "server shutting down")
        self._closed = True
        tasks = [*self._tasks, *([self._ticker] if self._ticker else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for future in self._requests.values():
            future.cancel()
        await self.bus.flush(1.0)


async def open_session(node: Node, relay: Relay | None, link: ClientLink, claims: Claims, *,
                       msg_id: str | None, version: int, media: bool,
                       remote: str | None, resume: str | None = None) -> SessionPort:
    """Open the client's session where its room lives: on this node, or relayed to the
    room's owner. A new room goes where placement puts it (the less loaded of two serving
    nodes); a room this node holds never asks Redis. Raises ``ConferenceError``."""
    room = claims.grants.room
    for attempt in (1, 2):
        owner = node.id
        if relay is not None and node.rooms.get(room) is None:
            owner = await node.registry.place_room(room, node.id)
        try:
            if owner == node.id or relay is None:
                return await ParticipantSession.open(node, link, claims, msg_id=msg_id,
                                                     version=version, media=media,
                                                     remote=remote, resume=resume)
            return await relay.open(link, owner, claims, msg_id=msg_id, version=version,
                                    media=media, remote=remote, resume=resume)
        except ConferenceError as err:
            # The room moved between placement and the join, or its node did not answer
            # (now suspect: placement may give the room to a live node).
            moved = err.code is ConferenceCode.ROOM_ON_OTHER_NODE
            silent = relay is not None and owner != node.id and relay.suspected(owner)
            if attempt == 2 or not (moved or silent):
                raise
    raise AssertionError("unreachable")
