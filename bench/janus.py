"""Janus (Debian's ``janus`` package) as a process under test, with a private config.

Only the VideoRoom plugin and the HTTP transport load (every other plugin,
transport, logger and event handler is disabled), the HTTP API listens on
127.0.0.1 only, the admin API is off, and ICE gathers on one interface (the
benchmark namespace's veth end, bench/netns.py). The config lives in a
temporary folder that goes with the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.procs import BenchError, ServerProcess, free_port

JANUS_LIB = Path("/usr/lib/x86_64-linux-gnu/janus")
INSTALL_HINT = ("janus is not installed: sudo apt-get install -y --no-install-recommends janus "
                "(Debian's package, 1.1.2 in bookworm)")


def janus_binary() -> str | None:
    return shutil.which("janus")


def _others(folder: str, keep: str) -> str:
    """Every ``.so`` in one of Janus's module folders but ``keep``, comma-separated."""
    path = JANUS_LIB / folder
    names = sorted(p.name for p in path.glob("*.so")) if path.is_dir() else []
    return ",".join(n for n in names if n != keep)


def write_config(folder: Path, *, port: int, interface: str, debug_level: int = 2) -> None:
    """janus.jcfg, the HTTP transport's and the VideoRoom plugin's configs in ``folder``."""
    (folder / "janus.jcfg").write_text(f"""
general: {{
    configs_folder = "{folder}"
    plugins_folder = "{JANUS_LIB / 'plugins'}"
    transports_folder = "{JANUS_LIB / 'transports'}"
    events_folder = "{JANUS_LIB / 'events'}"
    loggers_folder = "{JANUS_LIB / 'loggers'}"
    debug_level = {debug_level}
    session_timeout = 120
}}
media: {{
    rtp_port_range = "30000-60000"
}}
nat: {{
    ice_enforce_list = "{interface}"
    nice_debug = false
}}
plugins: {{ disable = "{_others('plugins', 'libjanus_videoroom.so')}" }}
transports: {{ disable = "{_others('transports', 'libjanus_http.so')}" }}
loggers: {{ disable = "{_others('loggers', '')}" }}
events: {{ broadcast = false disable = "{_others('events', '')}" }}
""")
    (folder / "janus.transport.http.jcfg").write_text(f"""
general: {{ json = "plain" base_path = "/janus" http = true port = {port} ip = "127.0.0.1"
           https = false }}
admin: {{ admin_http = false admin_https = false }}
""")
    (folder / "janus.plugin.videoroom.jcfg").write_text("general: { }\n")


class JanusProcess(ServerProcess):
    """``janus`` in the foreground with a private config; healthy once ``/janus/info`` answers."""

    def __init__(self, *, interface: str, label: str = "janus") -> None:
        binary = janus_binary()
        if binary is None:
            raise BenchError(INSTALL_HINT)
        self._folder = tempfile.TemporaryDirectory(prefix="parley-janus-")
        port = free_port()
        write_config(Path(self._folder.name), port=port, interface=interface)
        super().__init__(label, [binary, "--configs-folder", self._folder.name,
                                 "--config", f"{self._folder.name}/janus.jcfg"], port=port)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/janus"

    async def _wait_healthy(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.returncode is not None:
                    raise self.failure(f"exited with status {self.proc.returncode}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.api}/info",
                                        timeout=aiohttp.ClientTimeout(total=1)) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise self.failure(f"not healthy within {timeout:.0f} s")

    async def kill(self) -> None:
        await super().kill()
        self._folder.cleanup()
