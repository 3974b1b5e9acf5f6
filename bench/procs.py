"""Child processes for benchmarks: a server under test and client processes.

Every process started here is killed by the ``async with`` block that owns
it, however the block ends; every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import aiohttp

REPO = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


class BenchError(Exception):
    """A benchmark could not run (a process died, a phase timed out)."""


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills it if the driver dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def parley_script() -> str:
    """The ``parley`` console script installed beside the running interpreter."""
    script = Path(sys.executable).parent / "parley"
    if not script.exists():
        raise BenchError(f"{script} not found; install the project first (make bench does)")
    return str(script)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/<pid>/stat`` utime + stime)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_kib(pid: int) -> int:
    """Resident set size of a process (``VmRSS`` in ``/proc/<pid>/status``), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


class _Child:
    """Owns one subprocess and the temporary file that collects its stderr."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.proc: asyncio.subprocess.Process | None = None
        self._stderr: IO[bytes] = tempfile.TemporaryFile()

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError(f"{self.label} is not running")
        return self.proc.pid

    def stderr_tail(self, limit: int = 2000) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:]

    async def _spawn(self, argv: list[str], env: dict[str, str] | None, *,
                     pipes: bool) -> asyncio.subprocess.Process:
        pipe = asyncio.subprocess.PIPE if pipes else asyncio.subprocess.DEVNULL
        self.proc = await asyncio.create_subprocess_exec(
            *argv, cwd=REPO, env=env, stdin=pipe, stdout=pipe, stderr=self._stderr,
            preexec_fn=_die_with_parent)
        return self.proc

    async def kill(self) -> None:
        """Kill the process (if it still runs) and reap it. Idempotent."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5.0)
        self._stderr.close()

    def failure(self, what: str) -> BenchError:
        return BenchError(f"{self.label}: {what}\n--- stderr ---\n{self.stderr_tail()}")

    async def _start(self) -> None:
        """Start the process (and wait until it is usable); subclasses say how."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self.kill()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.kill()


class ServerProcess(_Child):
    """A WebSocket server under test, listening on 127.0.0.1:``port``."""

    def __init__(self, label: str, argv: list[str], *, port: int,
                 env: dict[str, str] | None = None) -> None:
        super().__init__(label)
        self.port = port
        self._argv = argv
        self._env = env

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/rtc"

    async def _start(self) -> None:
        await self._spawn(self._argv, self._env, pipes=False)
        await self._wait_healthy(timeout=15.0)

    async def _wait_healthy(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/healthz"
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.returncode is not None:
                    raise self.failure(f"exited with status {self.proc.returncode}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise self.failure(f"not healthy within {timeout:.0f} s")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_kib(self) -> int:
        return rss_kib(self.pid)


class ClientProcess(_Child):
    """A client process talking line-delimited JSON on stdout, plain words on stdin."""

    def __init__(self, label: str, module: str, spec: dict[str, Any]) -> None:
        super().__init__(label)
        self._argv = [sys.executable, "-m", module, json.dumps(spec)]

    async def _start(self) -> None:
        await self._spawn(self._argv, None, pipes=True)

    async def read(self, event: str, *, timeout: float) -> dict[str, Any]:
        """Wait for the next line, which must be ``{"event": <event>, ...}``."""
        if self.proc is None or self.proc.stdout is None:
            raise BenchError(f"{self.label} is not running")
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise self.failure(f"no {event!r} within {timeout:.0f} s") from None
        if not line:
            raise self.failure(f"exited before {event!r}")
        message: dict[str, Any] = json.loads(line)
        if message.get("event") != event:
            raise self.failure(f"expected {event!r}, got {message}")
        return message

    async def finish(self, *, timeout: float = 10.0) -> None:
        """Wait for the process to exit by itself; kill it if it does not."""
        if self.proc is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), timeout)
        await self.kill()

    async def tell(self, word: str) -> None:
        if self.proc is None or self.proc.stdin is None:
            raise BenchError(f"{self.label} is not running")
        self.proc.stdin.write(word.encode() + b"\n")
        await self.proc.stdin.drain()


class LoadGenerator(_Child):
    """One ``parley loadtest`` process; its JSON result is read from stdout when it ends."""

    def __init__(self, *, url: str, keys: str, subscribers: int, duration: float, prefix: str,
                 publishers: int = 1, audio: bool = True, bitrate: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        super().__init__(f"parley loadtest ({prefix})")
        self._env = env
        self._argv = [parley_script(), "loadtest", "--url", url, "--keys", keys,
                      "--rooms", "1", "--publishers", str(publishers),
                      "--subscribers", str(subscribers), "--duration", f"{duration:g}",
                      "--room-prefix", prefix]
        if bitrate is not None:
            self._argv += ["--bitrate", str(bitrate)]
        if not audio:
            self._argv.append("--no-audio")

    async def _start(self) -> None:
        await self._spawn(self._argv, self._env, pipes=True)

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    async def result(self, *, timeout: float) -> dict[str, Any]:
        if self.proc is None or self.proc.stdout is None:
            raise BenchError(f"{self.label} is not running")
        try:
            out = await asyncio.wait_for(self.proc.stdout.read(), timeout)
            status = await asyncio.wait_for(self.proc.wait(), 10.0)
        except TimeoutError:
            raise self.failure(f"no result within {timeout:.0f} s") from None
        if status != 0:
            raise self.failure(f"exited with status {status}")
        result: dict[str, Any] = json.loads(out)
        return result
