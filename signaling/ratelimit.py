"""Rate limits of the edge: the per-connection token bucket (shared with the conference
layer, which meters app data with it), the strike counter that turns abuse into a close,
and the per-IP join limit."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from conference.ratelimit import TokenBucket

__all__ = ["KeyedRate", "StrikeCounter", "TokenBucket"]


class StrikeCounter:
    """Counts refusals in a sliding window; ``strike()`` is true once the limit is passed."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._times: deque[float] = deque()

    def strike(self) -> bool:
        now = self._clock()
        self._times.append(now)
        while self._times and now - self._times[0] > self._window:
            self._times.popleft()
        return len(self._times) > self._limit


class KeyedRate:
    """A token bucket per key (a client IP): ``rate`` per second up to ``burst``; a rate of
    0 allows everything. Keys whose bucket has refilled are forgotten, and at most
    ``max_keys`` are kept (the least recently used go first), so memory stays bounded."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 65536) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        """key → (tokens, when), least recently used first."""

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> bool:
        if self._rate <= 0:
            return True
        now = self._clock()
        self._forget_refilled(now)
        tokens, last = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self._max_keys:
            del self._buckets[next(iter(self._buckets))]
        return allowed

    def _forget_refilled(self, now: float) -> None:
        refill = self._burst / self._rate
        while self._buckets:
            key = next(iter(self._buckets))
            if now - self._buckets[key][1] < refill:
                return
            del self._buckets[key]
