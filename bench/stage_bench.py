"""Promotion → first frame: how long a listener approved to speak takes to be seen.

The node runs in its own process (``parley serve``). In this process: a
moderator (signalling only), a listener that publishes a pre-encoded VP8 clip
as soon as it is approved, and a viewer that reassembles frames without
decoding. Each round measures approve sent → the viewer's first key frame of
the new speaker, then moves the speaker back to the audience.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from typing import Any

from bench.procs import ServerProcess, free_port, parley_script
from bench.report import Row, SuiteResult, percentile
from client.client import ParleyClient
from client.media import EncodedTrack, encode_video
from signaling.auth import mint_token

NAME = "stage"
KEY, SECRET = "bench", "bench-secret-0123456789abcdef0123456789"
CONFIG = """sfu:
  ice_addresses: ["127.0.0.1"]
signaling:
  rate_limit_per_second: 1000
  rate_limit_burst: 1000
  max_connections_per_ip: 0
  join_rate_per_ip: 0
"""


def _server(config_path: str) -> ServerProcess:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    argv = [parley_script(), "serve", "--port", str(port), "--keys", f"{KEY}:{SECRET}",
            "--config", config_path, "--log-level", "warning"]
    return ServerProcess("parley serve", argv, port=port, env=env)


def _token(identity: str, role: str) -> str:
    return mint_token(key=KEY, secret=SECRET, room="stage", identity=identity, role=role,
                      ttl=3600)


async def _first_keyframe(viewer: ParleyClient, participant: str, since: float,
                          timeout: float = 10.0) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        for mid, remote in viewer.remote.items():
            at = viewer.first_frame_at.get(mid)
            if remote.participant == participant and remote.kind == "video" and at and at > since:
                return at - since
        await asyncio.sleep(0.005)
    raise TimeoutError("the new speaker's video never reached the viewer")


async def _round(url: str, moderator: ParleyClient, viewer: ParleyClient, clip: Any,
                 n: int) -> float:
    listener = ParleyClient(url, _token(f"listener-{n}", "listener"), decode=False)
    await listener.connect()
    try:
        await listener.request({"type": "request-to-speak", "message": "bench"})
        await moderator.next_event("speaker-request", timeout=10)
        started = time.perf_counter()
        await moderator.request({"type": "approve-speaker",
                                 "participant": listener.participant_id})
        await listener.next_event("permission-changed", timeout=10)
        await listener.publish(EncodedTrack(clip))
        return await _first_keyframe(viewer, listener.participant_id, started)
    finally:
        await listener.close()


async def _measure(rounds: int) -> dict[str, Any]:
    clip = encode_video(seconds=1.0)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config:
        config.write(CONFIG)
    try:
        async with _server(config.name) as server:
            url = f"http://127.0.0.1:{server.port}"
            moderator = ParleyClient(url, _token("moderator", "moderator"), media=False)
            viewer = ParleyClient(url, _token("viewer", "listener"), decode=False)
            await moderator.connect()
            await viewer.connect()
            try:
                samples = [await _round(url, moderator, viewer, clip, n) for n in range(rounds)]
            finally:
                await moderator.close()
                await viewer.close()
    finally:
        os.unlink(config.name)
    return {"rounds": rounds, "samples": samples,
            "p50": percentile(samples, 50), "p99": percentile(samples, 99)}


def run(*, quick: bool = False) -> SuiteResult:
    started = time.monotonic()
    figures = asyncio.run(_measure(3 if quick else 20))
    rows = [Row(figure="promotion → first frame (approve sent → viewer's first key frame)",
                value=f"p50 {figures['p50'] * 1000:.0f} ms, p99 {figures['p99'] * 1000:.0f} ms",
                note=f"{figures['rounds']} rounds; includes the new speaker's publish offer")]
    return SuiteResult(name=NAME, rows=rows, figures=figures,
                       seconds=time.monotonic() - started)
