"""A node frozen for 5 s (SIGSTOP, then SIGCONT) shows video again within 3 s.

``parley serve`` runs in its own process; Chromium publishes its fake camera from
one page and watches it from another. The node is stopped outright for 5 s, as a
long pause of the host or a debugger would: nothing of it runs, the kernel drops
what overflows its sockets, both pages' ICE goes "disconnected". After SIGCONT the
viewer's remote video must be advancing again (a second of frames presented with
no pause over 0.3 s, by ``requestVideoFrameCallback``) in under 3 s.

Set ``PARLEY_FREEZE_REPORT`` to a file name to get the viewer's and the
publisher's RTP statistics every 0.25 s after SIGCONT (where the time goes).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser import launch_chromium, wait_until
from tests.e2e.playback import frame_times, inbound, open_watched, outbound, steady_from
from tests.signaling.test_cli import KEYS, PARLEY, clean_env, free_port, running

ROOM = "frozen"
FREEZE = 5.0
BOUND = 3.0
"""Seconds after SIGCONT by which the viewer's video must be advancing again."""
WATCH_AFTER = 12.0


async def _timeline(viewer: Any, publisher: Any, resumed: float) -> list[dict[str, Any]]:
    """Stats of both pages every 0.25 s until the video is steady or WATCH_AFTER passes."""
    out: list[dict[str, Any]] = []
    while time.time() - resumed < WATCH_AFTER:
        sub, pub = await inbound(viewer), await outbound(publisher)
        out.append({"t": round(time.time() - resumed, 2), "in": sub, "out": pub})
        if steady_from(await frame_times(viewer, publisher.participant_id), resumed):
            break
        await asyncio.sleep(0.25)
    return out


def _write_report(report: dict[str, Any]) -> None:
    name = os.environ.get("PARLEY_FREEZE_REPORT")
    if name:
        Path(name).write_text(json.dumps(report, indent=1))


@pytest.mark.timeout(120)
async def test_video_advances_again_within_3_s_of_a_5_s_freeze_of_the_node(
        tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(PARLEY_KEYS=KEYS, PARLEY_SFU_ICE_ADDRESSES="127.0.0.1",
                    PARLEY_LOG_LEVEL="info")
    argv = [PARLEY, "serve", "--port", str(port)]
    async with running(tmp_path, argv, port, env=env) as server, launch_chromium() as browser:
        publisher = await open_watched(browser, server.url("/"), ROOM, "camera")
        viewer = await open_watched(browser, server.url("/"), ROOM, "viewer", role="listener")
        who = publisher.participant_id
        try:
            async def playing() -> bool:
                times = await frame_times(viewer, who)
                return len(times) > 60 and steady_from(times, times[-1] - 3.0) is not None
            await wait_until(playing, "the viewer to play the camera", 30)
            await asyncio.sleep(2.0)

            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                stopped = time.time()
                await asyncio.sleep(FREEZE)
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            resumed = time.time()
            timeline = await _timeline(viewer, publisher, resumed)
            times = await frame_times(viewer, who)
            back = steady_from(times, resumed)
            first = next((t for t in times if t >= resumed), None)
            report = {
                "first_frame_after_resume": None if first is None else round(first - resumed, 2),
                "steady_after_resume": None if back is None else round(back - resumed, 2),
                "frames_during_freeze": sum(1 for t in times if stopped + 0.5 < t < resumed),
                "timeline": timeline,
            }
            _write_report(report)
            assert back is not None and back - resumed < BOUND, (
                f"video advancing again {report['steady_after_resume']} s after SIGCONT "
                f"(first frame {report['first_frame_after_resume']} s); bound {BOUND} s")
            assert viewer.errors == [] and publisher.errors == [], (
                viewer.errors, publisher.errors)
            # The node's own stop is not the publisher's: no "Video interrupted" for it.
            assert "producer stalled" not in server.stderr.read_text()
        finally:
            await viewer.close()
            await publisher.close()
