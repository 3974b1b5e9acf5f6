"""When and where the Python client reconnects (docs/protocol.md, "Resuming and
reconnecting"): the back-off, the close codes that end a session for good, and the node
URLs tried in turn."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
"""Seconds before each attempt after a lost socket; the last one repeats (±20 %)."""
RECONNECT_SOON = 0.25
"""At most this long (random) before reconnecting when the node asked for it (4010)."""
RECONNECT = 4010
FINAL_CLOSE_CODES = frozenset({4001, 4005, 4006, 4007})
"""Refused token, replaced, removed, room closed: the session is over."""
FINAL_DISCONNECTS = frozenset({"duplicate_identity", "removed", "room_closed"})
NEXT_NODE_CODES = frozenset({"node_draining", "room_on_other_node", "cluster_unavailable"})
"""Join refusals after which the client tries the next node at once."""


def ws_url(url: str) -> str:
    base = url.rstrip("/")
    return base.replace("https://", "wss://").replace("http://", "ws://") + "/rtc"


@dataclass
class ResumeState:
    """The last resume token and when it stops being valid (wall clock)."""

    token: str | None = None
    expires_at: float = 0.0

    def update(self, message: dict[str, object]) -> None:
        token, expires = message.get("resume_token"), message.get("resume_expires_at")
        self.token = token if isinstance(token, str) else None
        self.expires_at = float(expires) if isinstance(expires, int | float) else 0.0

    def current(self) -> str | None:
        """The token while it is valid (with a little margin for the trip)."""
        return self.token if self.token and self.expires_at - 0.2 > time.time() else None


class Nodes:
    """The node URLs a client may use; it stays on one until told to move."""

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ValueError("at least one node URL")
        self.urls = [ws_url(u) for u in urls]
        self.index = 0

    @property
    def current(self) -> str:
        return self.urls[self.index]

    def next(self) -> str:
        self.index = (self.index + 1) % len(self.urls)
        return self.current


def delay(attempt: int, *, soon: bool) -> float:
    """Seconds before attempt number ``attempt`` (1-based)."""
    if soon and attempt == 1:
        return random.uniform(0.0, RECONNECT_SOON)
    base = DELAYS[min(attempt, len(DELAYS)) - 1]
    return base * random.uniform(0.8, 1.2)


class Republishable(MediaStreamTrack):
    """What the client hands to a peer connection in place of a caller's track.

    aiortc stops a sender's track when the sender stops (its connection closes), so the
    caller's track could never be published again after a reconnection; each publish
    gets a new one of these instead, and stopping it leaves the caller's track live."""

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        return await self.source.recv()
