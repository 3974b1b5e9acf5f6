"""Give the C allocator's free pages back to the system now and then (glibc only).

A meeting's media allocates from several threads (aiortc starts a decoder thread per
received track; SDP is parsed in worker threads), and glibc keeps the pages that those
allocations freed inside its heaps: over an hour of joins and leaves a node's RSS creeps
up although nothing lives longer than its meeting (docs/BENCHMARKS.md, the soak).
``malloc_trim(0)`` returns such pages. :class:`MemoryTrimmer` calls it every
``malloc_trim_interval`` seconds in a worker thread (it takes a few milliseconds on a big
heap, and ctypes lets go of the GIL while it runs), and counts what RSS gave back.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger("parley.memory")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


M_ARENA_MAX = -8
"""mallopt's parameter for the most heaps glibc creates (malloc.h)."""


def limit_arenas(count: int) -> bool:
    """At most ``count`` glibc heaps from now on (``mallopt(M_ARENA_MAX)``, what the
    ``MALLOC_ARENA_MAX`` variable sets). Each thread that allocates otherwise gets a heap of
    its own, up to eight per core, and each keeps what it freed. A variable set in the
    environment wins; 0 leaves glibc's default. Returns whether the limit was set."""
    if count <= 0 or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, count))


def resident_bytes() -> int | None:
    """This process's resident set size (Linux), or None."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def trim_once(trim: Callable[[int], int]) -> int:
    """Call ``trim(0)``; returns the bytes RSS fell by (0 when it did not, or is unknown)."""
    before = resident_bytes()
    trim(0)
    after = resident_bytes()
    if before is None or after is None:
        return 0
    return max(0, before - after)


class MemoryTrimmer:
    """Owns one task that trims every ``interval`` seconds; ``interval`` 0 (or a C library
    without ``malloc_trim``) makes it do nothing. ``start()`` needs a running loop;
    ``close()`` cancels and awaits the task and is idempotent."""

    def __init__(self, interval: float, registry: CollectorRegistry) -> None:
        self._interval = interval
        self._trim = find_malloc_trim() if interval > 0 else None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.trims = Counter("parley_node_malloc_trims", "malloc_trim(0) calls (glibc)",
                             registry=registry)
        self.returned = Counter(
            "parley_node_malloc_trim_returned_bytes",
            "Bytes of RSS the periodic malloc_trim(0) gave back to the system",
            registry=registry)

    @property
    def active(self) -> bool:
        return self._trim is not None

    def start(self) -> None:
        if self._trim is None or self._task is not None or self._closed:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(self._trim),
                                                            name="parley-malloc-trim")

    async def _run(self, trim: Callable[[int], int]) -> None:
        while True:
            await asyncio.sleep(self._interval)
            returned = await asyncio.to_thread(trim_once, trim)
            self.trims.inc()
            self.returned.inc(returned)
            if returned:
                log.debug("malloc_trim gave back memory", extra={"bytes": returned})

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
