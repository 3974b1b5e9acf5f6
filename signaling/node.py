"""The node: the process-wide state shared by every signalling session."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from prometheus_client import CollectorRegistry

from conference.ids import NodeId, new_node_id
from conference.manager import RoomManager
from conference.metrics import ConferenceMetrics
from conference.registry import InMemoryRoomRegistry, RoomRegistry
from signaling.auth import TokenVerifier
from signaling.config import NodeConfig
from signaling.metrics import SignalingMetrics
from signaling.ratelimit import KeyedRate

log = logging.getLogger("parley.node")


class Drainable(Protocol):
    """What the node asks of a client connection when it shuts down."""

    def shutdown(self) -> None:
        """Tell the client the node is going away and close the socket."""

    def abort(self) -> None:
        """Drop the socket at once, without a close handshake."""


class Node:
    """Created by the app's cleanup context; ``close()`` is idempotent.

    Closing order: stop taking joins (draining) → tell every connection and
    close its socket → close every room → close the registry.
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
        self.registry: RoomRegistry = registry or InMemoryRoomRegistry()
        self.rooms = RoomManager(config.rooms, self.registry, self.id, self.conference_metrics,
                                 config.sfu_config())
        self.verifier = TokenVerifier(config.auth)
        self.join_limits = KeyedRate(config.signaling.join_rate_per_ip,
                                     config.signaling.join_burst_per_ip)
        """Joins per client IP (``signaling.join_rate_per_ip``)."""
        self.connections: set[Drainable] = set()
        """Client sockets open on this node."""
        self._no_connections = asyncio.Event()
        self._no_connections.set()
        self._closed = False

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
        return not self._closed and not self.rooms.draining

    async def drain(self, grace: float) -> None:
        """Stop taking joins, tell every client, and wait for sockets to close; the ones still
        open near the end of ``grace`` are aborted, so draining ends within ``grace`` whatever
        the clients do."""
        if self.rooms.draining:
            return
        self.rooms.draining = True
        log.info("draining", extra={"connections": len(self.connections)})
        for connection in list(self.connections):
            connection.shutdown()
        abort_at = grace - min(1.0, grace / 4)
        if await self._until_no_connections(abort_at):
            return
        log.info("aborting sockets still open", extra={"connections": len(self.connections)})
        for connection in list(self.connections):
            connection.abort()
        await self._until_no_connections(grace - abort_at)

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
        await self.rooms.close()
        await self.registry.close()
