"""The node: the process-wide state shared by every signalling session."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from conference.ids import NodeId, new_node_id
from conference.manager import RoomManager
from conference.metrics import ConferenceMetrics
from conference.registry import InMemoryRoomRegistry, RoomRegistry
from sfu.hooks import restrict_host_addresses
from signaling.auth import TokenVerifier
from signaling.config import NodeConfig
from signaling.metrics import SignalingMetrics

if TYPE_CHECKING:
    from signaling.session import SignalSession

log = logging.getLogger("parley.node")


class Node:
    """Created by the app's cleanup context; ``close()`` is idempotent.

    Closing order: stop taking joins (draining) → tell every session and
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
        if config.sfu.ice_addresses:
            restrict_host_addresses(config.sfu.ice_addresses)
        self.rooms = RoomManager(config.rooms, self.registry, self.id, self.conference_metrics,
                                 config.sfu_config())
        self.verifier = TokenVerifier(config.auth)
        self.sessions: set[SignalSession] = set()
        self._no_sessions = asyncio.Event()
        self._no_sessions.set()
        self._closed = False

    def register(self, session: SignalSession) -> None:
        self.sessions.add(session)
        self._no_sessions.clear()
        self.metrics.connections.set(len(self.sessions))

    def unregister(self, session: SignalSession) -> None:
        self.sessions.discard(session)
        self.metrics.connections.set(len(self.sessions))
        if not self.sessions:
            self._no_sessions.set()

    @property
    def draining(self) -> bool:
        return self.rooms.draining

    @property
    def ready(self) -> bool:
        return not self._closed and not self.rooms.draining

    async def drain(self, grace: float) -> None:
        """Stop taking joins, tell every client, and wait up to ``grace`` for sockets to close."""
        if self.rooms.draining:
            return
        self.rooms.draining = True
        log.info("draining", extra={"sessions": len(self.sessions)})
        for session in list(self.sessions):
            session.shutdown()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_sessions.wait(), grace)

    async def close(self) -> None:
        if self._closed:
            return
        await self.drain(self.config.shutdown_grace)
        self._closed = True
        await self.rooms.close()
        await self.registry.close()
