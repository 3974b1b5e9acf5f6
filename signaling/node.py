"""The node: the process-wide state shared by every signalling session."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from prometheus_client import CollectorRegistry

from conference.cluster.cluster import Cluster
from conference.cluster.state import InMemoryRoomStateStore, RoomStateStore
from conference.ids import NodeId, new_node_id
from conference.manager import RoomManager
from conference.metrics import ConferenceMetrics
from conference.registry import InMemoryRoomRegistry, RoomRegistry
from signaling.auth import TokenVerifier
from signaling.config import NodeConfig
from signaling.memory import MemoryTrimmer
from signaling.metrics import SignalingMetrics, register_runtime_metrics
from signaling.ratelimit import KeyedRate
from signaling.resume import ResumeTokens

log = logging.getLogger("parley.node")


class Drainable(Protocol):
    """What the node asks of a client connection when it shuts down."""

    def shutdown(self, *, reconnect: bool = False) -> None:
        """Tell the client the node is going away and close the socket; ``reconnect``: ask
        it to reconnect at once and resume (a cluster has other nodes)."""

    def abort(self) -> None:
        """Drop the socket at once, without a close handshake."""


class Relaying(Protocol):
    """What the node asks of its relay (signaling/relay.py), which the app creates."""

    def start(self) -> None: ...

    async def close(self) -> None: ...


class Node:
    """Created by the app's cleanup context; ``close()`` is idempotent.

    With ``redis.url`` set the node is clustered: its ``Cluster`` provides the
    room registry and the room state store, and ``start()`` (from the app's
    cleanup context, on the running loop) starts the heartbeat.

    Closing order: stop taking joins (draining) → clustered: let the meetings go
    on for ``cluster.drain_timeout``, then hand the rooms over (state written,
    claims released, participants told to reconnect) → tell every connection and
    close its socket → close every room → close the relay (relayed sessions end,
    the bus is flushed) → close the registry → write the room state and leave the
    cluster (the bus closes there).
    """

    def __init__(
        self,
        config: NodeConfig,
        *,
        registry: RoomRegistry | None = None,
        node_id: NodeId | None = None,
    ) -> None:
        self.config = config
        self.id = node_id or new_node_id()
        self.started_at = time.time()
        self.metrics_registry = CollectorRegistry(auto_describe=True)
        self.conference_metrics = ConferenceMetrics(self.metrics_registry)
        self.metrics = SignalingMetrics(self.metrics_registry)
        register_runtime_metrics(self.metrics_registry)
        self.memory = MemoryTrimmer(config.malloc_trim_interval, self.metrics_registry)
        self.cluster: Cluster | None = None
        self.room_state: RoomStateStore = InMemoryRoomStateStore(config.room_state_ttl)
        if config.redis.enabled:
            self.cluster = Cluster(config.redis, config.cluster, self.id, self.metrics_registry,
                                   state_ttl=config.room_state_ttl)
            self.room_state = self.cluster.state
        default_registry = self.cluster.registry if self.cluster else InMemoryRoomRegistry()
        self.registry: RoomRegistry = registry or default_registry
        self.rooms = RoomManager(config.rooms, self.registry, self.id, self.conference_metrics,
                                 config.sfu_config(), state=self.room_state)
        if self.cluster is not None:
            self.cluster.attach(self.rooms)
        self.verifier = TokenVerifier(config.auth)
        self.resume_tokens = ResumeTokens(config.auth.keys)
        self.join_limits = KeyedRate(config.signaling.join_rate_per_ip,
                                     config.signaling.join_burst_per_ip)
        """Joins per client IP (``signaling.join_rate_per_ip``)."""
        self.relay: Relaying | None = None
        """Set by the app when the node is clustered: sessions relayed to and from other
        nodes."""
        self.connections: set[Drainable] = set()
        """Client sockets open on this node."""
        self._no_connections = asyncio.Event()
        self._no_connections.set()
        self._closed = False

    def start(self) -> None:
        """Start trimming the allocator's free memory; join the cluster, if any (the
        heartbeat retries until Redis answers)."""
        if not self._closed:
            self.memory.start()
        if self.cluster is not None and not self._closed:
            self.cluster.start()
            if self.relay is not None:
                self.relay.start()

    def register(self, connection: Drainable) -> None:
        self.connections.add(connection)
        self._no_connections.clear()
        self.metrics.connections.set(len(self.connections))

    def unregister(self, connection: Drainable) -> None:
        self.connections.discard(connection)
        self.metrics.connections.set(len(self.connections))
        if not self.connections:
            self._no_connections.set()

    @property
    def draining(self) -> bool:
        return self.rooms.draining

    @property
    def ready(self) -> bool:
        """Takes connections: not closed, not draining. A clustered node whose Redis is away
        still serves the rooms it holds (``/readyz`` also asks ``cluster_reachable``)."""
        return not self._closed and not self.rooms.draining

    @property
    def accepting(self) -> bool:
        """Upgrades client sockets: a clustered node keeps doing so while it drains, so
        that its meetings go on (joins into rooms it does not hold are refused)."""
        return not self._closed and (not self.rooms.draining or self.cluster is not None)

    @property
    def cluster_reachable(self) -> bool:
        """Always on a single node; clustered, whether the node's record is in Redis."""
        return self.cluster is None or self.cluster.healthy

    async def drain(self, grace: float) -> None:
        """Stop taking joins, tell every client, and wait for sockets to close; the ones still
        open near the end of ``grace`` are aborted, so draining ends within ``grace`` whatever
        the clients do."""
        if self.rooms.draining:
            return
        self.rooms.draining = True
        if self.cluster is not None:
            self.cluster.set_draining()
            await self._hand_over(self.config.cluster.drain_timeout)
        log.info("draining", extra={"connections": len(self.connections)})
        for connection in list(self.connections):
            connection.shutdown(reconnect=self.cluster is not None)
        abort_at = grace - min(1.0, grace / 4)
        if await self._until_no_connections(abort_at):
            return
        log.info("aborting sockets still open", extra={"connections": len(self.connections)})
        for connection in list(self.connections):
            connection.abort()
        await self._until_no_connections(grace - abort_at)

    async def _hand_over(self, timeout: float) -> None:
        """Clustered: the meetings go on for up to ``timeout`` seconds (or until nobody is
        connected to them any more); then the rooms go to the cluster and their
        participants are told to reconnect (``node_draining``, 4010)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        log.info("draining: meetings go on", extra={"rooms": len(self.rooms.rooms),
                                                    "drain_timeout": timeout})
        while loop.time() < deadline:
            if not self.rooms.connected_count():  # every meeting ended meanwhile
                break
            await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))
        await self.rooms.hand_over()

    async def _until_no_connections(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._no_connections.wait(), max(0.0, timeout))
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        if self._closed:
            return
        await self.drain(self.config.shutdown_grace)
        self._closed = True
        await self.memory.close()
        await self.rooms.close()
        if self.relay is not None:
            await self.relay.close()
        await self.registry.close()
        if self.cluster is not None:
            await self.cluster.close()
        else:
            await self.room_state.close()
