"""Room state that outlives a room on one node: options, stage places, removal bars,
pending requests to speak.

The room keeps its state in a :class:`RoomStateHandle` and changes it only
through the handle, which hands every change to its store (write-through,
never blocking). When a room is (re)created on a node, the manager loads the
handle from the store first, so a room that comes back (the same node after
its empty timeout, or another node after this one died) keeps what its
moderators decided. A single node uses :class:`InMemoryRoomStateStore`; a
cluster, ``conference.cluster.redis_state.RedisRoomStateStore``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from conference.config import RoomOptions, StagePolicy
from conference.ids import Identity, RoomName


@dataclass(frozen=True, kw_only=True)
class PendingRequest:
    message: str
    expires_at: float
    """Wall-clock time."""


@dataclass(frozen=True, kw_only=True)
class RoomState:
    """One room's shared state, as stored."""

    options: RoomOptions | None = None
    """Set once changed from the node's defaults."""
    speakers: frozenset[Identity] = frozenset()
    """Identities approved or invited onto the stage: they rejoin as speakers."""
    bars: dict[str, float] = field(default_factory=dict)
    """Token id → wall-clock time its removal bar ends (the token's expiry)."""
    requests: dict[Identity, PendingRequest] = field(default_factory=dict)
    """Pending requests to speak, by identity."""

    def pruned(self, now: float | None = None) -> RoomState:
        """Without expired bars and requests."""
        now = time.time() if now is None else now
        return replace(self, bars={t: u for t, u in self.bars.items() if u > now},
                       requests={i: r for i, r in self.requests.items() if r.expires_at > now})

    @property
    def empty(self) -> bool:
        return (self.options is None and not self.speakers and not self.bars
                and not self.requests)

    def encode(self) -> str:
        return json.dumps({
            "options": None if self.options is None else asdict(self.options),
            "speakers": sorted(self.speakers),
            "bars": self.bars,
            "requests": {i: asdict(r) for i, r in self.requests.items()},
        })

    @classmethod
    def decode(cls, text: str) -> RoomState:
        data: dict[str, Any] = json.loads(text)
        options = data.get("options")
        return cls(
            options=None if options is None else RoomOptions(
                max_speakers=int(options["max_speakers"]),
                stage_policy=StagePolicy(options["stage_policy"]),
                speaker_request_timeout=float(options["speaker_request_timeout"]),
                moderator_can_unmute=bool(options["moderator_can_unmute"])),
            speakers=frozenset(Identity(i) for i in data.get("speakers", ())),
            bars={str(t): float(u) for t, u in data.get("bars", {}).items()},
            requests={Identity(i): PendingRequest(message=str(r["message"]),
                                                  expires_at=float(r["expires_at"]))
                      for i, r in data.get("requests", {}).items()},
        )


class RoomStateStore(Protocol):
    """Where room state is kept between rooms. ``save`` never blocks."""

    async def load(self, room: RoomName) -> RoomState:
        """The room's stored state (empty if none); may raise ``cluster_unavailable``."""
        ...

    def save(self, room: RoomName, state: RoomState) -> None:
        """Store the room's whole state (later saves win); written in the background."""
        ...

    def opened(self, handle: RoomStateHandle) -> None:
        """A room holding ``handle`` now lives on this node."""
        ...

    def closed(self, room: RoomName) -> None:
        """The room left this node (its last state was saved)."""
        ...

    async def flush(self, timeout: float = 2.0) -> bool:
        """Wait until every save is written; ``False`` if ``timeout`` passed first."""
        ...

    async def close(self) -> None:
        """Write what is pending (within a deadline) and stop. Idempotent."""
        ...


class RoomStateHandle:
    """The state of one live room; every change is saved through the store."""

    def __init__(self, room: RoomName, state: RoomState, store: RoomStateStore) -> None:
        self.room = room
        self.state = state.pruned()
        self._store = store

    @classmethod
    def detached(cls, room: RoomName) -> RoomStateHandle:
        """A handle whose changes go nowhere (a room built without a manager)."""
        return cls(room, RoomState(), InMemoryRoomStateStore())

    def _set(self, state: RoomState) -> None:
        self.state = state
        self._store.save(self.room, state.pruned())

    def set_options(self, options: RoomOptions) -> None:
        self._set(replace(self.state, options=options))

    def set_speaker(self, identity: Identity, on_stage: bool) -> None:
        speakers = (self.state.speakers | {identity} if on_stage
                    else self.state.speakers - {identity})
        if speakers != self.state.speakers:
            self._set(replace(self.state, speakers=speakers))

    def bar(self, token_id: str, until: float) -> None:
        self._set(replace(self.state.pruned(), bars={**self.state.bars, token_id: until}))

    def is_barred(self, token_id: str) -> bool:
        return self.state.bars.get(token_id, 0.0) > time.time()

    def set_request(self, identity: Identity, request: PendingRequest | None) -> None:
        requests = dict(self.state.requests)
        if request is None:
            if requests.pop(identity, None) is None:
                return
        else:
            requests[identity] = request
        self._set(replace(self.state, requests=requests))

    def request_of(self, identity: Identity) -> PendingRequest | None:
        request = self.state.requests.get(identity)
        return request if request is not None and request.expires_at > time.time() else None


class InMemoryRoomStateStore:
    """One node's store: state survives a room's close on this node for ``ttl`` seconds."""

    def __init__(self, ttl: float = 3600.0) -> None:
        self._ttl = ttl
        self._saved: dict[RoomName, tuple[float, RoomState]] = {}

    async def load(self, room: RoomName) -> RoomState:
        now = time.monotonic()
        self._saved = {r: v for r, v in self._saved.items() if v[0] > now}
        entry = self._saved.get(room)
        return entry[1] if entry is not None else RoomState()

    def save(self, room: RoomName, state: RoomState) -> None:
        if state.empty:
            self._saved.pop(room, None)
        else:
            self._saved[room] = (time.monotonic() + self._ttl, state)

    def opened(self, handle: RoomStateHandle) -> None:
        pass

    def closed(self, room: RoomName) -> None:
        pass

    async def flush(self, timeout: float = 2.0) -> bool:
        return True

    async def close(self) -> None:
        self._saved.clear()
