"""Light subscribers spread over worker processes (``parley loadtest --processes N``).

One Python process receiving a few hundred streams is CPU-bound before the node
is; so subscribers live in ``N`` worker processes (``python -m client.pool``),
each an asyncio loop holding its share, every one with a ``LightReceiver``
(client/light.py). The parent talks to each worker in JSON lines:

- the worker's argument: ``{"factory": "module:function", "args": {...},
  "indices": [...], "concurrency": k, "join_timeout": s}``; it calls
  ``await factory(args, index)`` for each index (``k`` at a time), which returns
  a joined subscriber (``.light``, ``async close()``), then prints
  ``{"event": "ready", "joined": n, "failed": [...]}``;
- ``snapshot`` → ``{"event": "snapshot", "totals": ..., "per_stream": [...],
  "ticks": [...], "first": [...], "samples": [...]}``: sums by kind, complete
  video frames and RTP clock ticks covered per subscriber, first complete frame
  time per subscriber, latency samples since the previous snapshot;
- ``stop`` → every subscriber closed, ``{"event": "stopped"}``, exit.

The factory is named, not passed, so any signalling can be driven the same way:
Parley's (``client.loadtest:parley_subscriber``) or a benchmark's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from client.light import LightReceiver, sum_totals

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_LINE_LIMIT = 64 * 1024 * 1024
"""A snapshot line carries every latency sample of a window (about 60 bytes each)."""


class Subscriber(Protocol):
    light: LightReceiver

    async def close(self) -> None: ...


Factory = Callable[[dict[str, Any], int], Awaitable[Subscriber]]


class PoolError(RuntimeError):
    """A worker died, or did not answer in time."""


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """Every worker's counts at one moment, merged."""

    totals: dict[str, dict[str, int]]
    per_stream: list[int]
    """Complete video frames so far, one entry per joined subscriber."""
    ticks: list[int]
    """Video RTP clock ticks covered so far (``StreamCount.ticks``), per subscriber."""
    first: list[float | None]
    """When each subscriber's first complete video frame came (monotonic)."""
    samples: list[tuple[str, float]] = field(default_factory=list)


def _cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class _Worker:
    def __init__(self, spec: dict[str, Any], env: dict[str, str] | None) -> None:
        self._spec = spec
        self._env = env
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "client.pool", json.dumps(self._spec), env=self._env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=self._stderr,
            limit=_LINE_LIMIT)

    async def ask(self, word: str | None, event: str, timeout: float) -> dict[str, Any]:
        proc = self.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        if word is not None:
            proc.stdin.write(word.encode() + b"\n")
            await proc.stdin.drain()
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        except TimeoutError:
            raise self._failure(f"no {event!r} within {timeout:.0f} s") from None
        if not line:
            raise self._failure(f"exited before {event!r}")
        message: dict[str, Any] = json.loads(line)
        if message.get("event") != event:
            raise self._failure(f"expected {event!r}, got {str(message)[:200]}")
        return message

    def _failure(self, what: str) -> PoolError:
        self._stderr.seek(0)
        tail = self._stderr.read().decode(errors="replace")[-1500:]
        return PoolError(f"load worker: {what}\n--- stderr ---\n{tail}")

    def cpu_seconds(self) -> float:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return 0.0
        with contextlib.suppress(OSError):
            return _cpu_seconds(proc.pid)
        return 0.0

    async def kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5.0)
        self._stderr.close()


class SubscriberPool:
    """``count`` subscribers made by ``factory`` over ``processes`` workers.

    ``async with`` starts the workers and waits until every subscriber joined
    (or failed to); leaving it stops them (subscribers close, then workers are killed).
    """

    def __init__(self, *, factory: str, args: dict[str, Any], count: int, processes: int = 1,
                 join_timeout: float = 30.0, concurrency: int = 8,
                 env: dict[str, str] | None = None) -> None:
        processes = max(1, min(processes, count))
        self._timeout = join_timeout
        self._workers = [_Worker({"factory": factory, "args": args,
                                  "indices": list(range(n, count, processes)),
                                  "concurrency": concurrency, "join_timeout": join_timeout},
                                 env) for n in range(processes)]
        self.joined = 0
        self.failed: list[str] = []

    async def __aenter__(self) -> SubscriberPool:
        try:
            for worker in self._workers:
                await worker.start()
            ready = await asyncio.gather(*(w.ask(None, "ready", self._timeout + 30.0)
                                           for w in self._workers))
        except BaseException:
            await self._kill()
            raise
        self.joined = sum(int(r["joined"]) for r in ready)
        self.failed = [f for r in ready for f in r["failed"]]
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(PoolError, OSError, ValueError):
            await asyncio.gather(*(w.ask("stop", "stopped", 20.0) for w in self._workers))
        await self._kill()

    async def _kill(self) -> None:
        for worker in self._workers:
            await worker.kill()

    def cpu_seconds(self) -> float:
        """CPU time of every worker so far."""
        return sum(w.cpu_seconds() for w in self._workers)

    async def snapshot(self, timeout: float = 20.0) -> Snapshot:
        parts = await asyncio.gather(*(w.ask("snapshot", "snapshot", timeout)
                                       for w in self._workers))
        return Snapshot(totals=sum_totals(p["totals"] for p in parts),
                        per_stream=[n for p in parts for n in p["per_stream"]],
                        ticks=[n for p in parts for n in p["ticks"]],
                        first=[t for p in parts for t in p["first"]],
                        samples=[(k, t) for p in parts for k, t in p["samples"]])


# -- the worker process ------------------------------------------------------------
def _load_factory(name: str) -> Factory:
    module, _, attr = name.partition(":")
    factory: Factory = getattr(importlib.import_module(module), attr)
    return factory


async def _join_all(spec: dict[str, Any]) -> tuple[list[Subscriber], list[str]]:
    factory = _load_factory(spec["factory"])
    gate = asyncio.Semaphore(int(spec["concurrency"]))
    failed: list[str] = []

    async def one(index: int) -> Subscriber | None:
        async with gate:
            try:
                return await asyncio.wait_for(factory(spec["args"], index),
                                              float(spec["join_timeout"]))
            except Exception as exc:  # reported to the parent, which decides
                failed.append(f"{index}: {type(exc).__name__}: {exc}"[:300])
                return None

    made = await asyncio.gather(*(one(i) for i in spec["indices"]))
    return [s for s in made if s is not None], failed


def _snapshot(subscribers: list[Subscriber]) -> dict[str, Any]:
    firsts = []
    per_stream = []
    ticks = []
    samples: list[tuple[str, float]] = []
    for sub in subscribers:
        video = [s for s in sub.light.streams.values() if s.kind == "video"]
        per_stream.append(sum(s.complete for s in video))
        ticks.append(sum(s.ticks for s in video))
        times = [s.first_complete_at for s in video if s.first_complete_at is not None]
        firsts.append(min(times) if times else None)
        samples += sub.light.take_samples()
    return {"event": "snapshot", "totals": sum_totals(s.light.totals() for s in subscribers),
            "per_stream": per_stream, "ticks": ticks, "first": firsts, "samples": samples}


async def _serve(spec: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    subscribers, failed = await _join_all(spec)

    def say(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    say({"event": "ready", "joined": len(subscribers), "failed": failed})
    try:
        while line := (await reader.readline()).strip():
            if line == b"snapshot":
                say(_snapshot(subscribers))
            elif line == b"stop":
                break
    finally:
        await asyncio.gather(*(asyncio.wait_for(s.close(), 5.0) for s in subscribers),
                             return_exceptions=True)
    say({"event": "stopped"})


def main() -> None:
    asyncio.run(_serve(json.loads(sys.argv[1])))


if __name__ == "__main__":
    main()
