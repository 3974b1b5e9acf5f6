"""What a Chromium viewer actually shows: frame times of its remote videos and its
inbound-rtp statistics, for the freeze and loss tests.

``WATCH`` is installed in a page before its scripts run (Playwright init script):
it keeps every RTCPeerConnection the page creates in ``window.__pcs`` and, with
``requestVideoFrameCallback``, records the wall-clock time (ms since the epoch,
comparable with Python's ``time.time()`` on the same machine) of every frame each
remote ``<video>`` element presents, by participant, in ``window.__frames`` (and each
frame's width, in ``window.__widths``: a simulcast layer switch shows as a change).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from tests.conftest import token
from tests.e2e.browser import RECORD_PCS, STEP, MeetingPage

if TYPE_CHECKING:
    from playwright.async_api import Browser

WATCH = RECORD_PCS + """
(() => {
  window.__frames = {};
  window.__widths = {};
  const watched = new WeakSet();
  const watch = (video) => {
    watched.add(video);
    const tile = video.closest(".tile");
    const who = tile ? tile.dataset.participant : "?";
    const times = (window.__frames[who] = window.__frames[who] || []);
    const widths = (window.__widths[who] = window.__widths[who] || []);
    const step = (_, meta) => {
      if (!video.isConnected) return;
      times.push(performance.timeOrigin + performance.now());
      widths.push(meta ? meta.width : 0);
      video.requestVideoFrameCallback(step);
    };
    video.requestVideoFrameCallback(step);
  };
  setInterval(() => {
    for (const v of document.querySelectorAll(".tile video[data-track]")) {
      if (!watched.has(v)) watch(v);
    }
  }, 50);
})();
"""

INBOUND = """
async () => {
  const out = [];
  for (const pc of window.__pcs || []) {
    if (pc.connectionState === "closed") continue;
    (await pc.getStats()).forEach((s) => {
      if (s.type !== "inbound-rtp" || s.kind !== "video") return;
      out.push({
        mid: s.mid, ssrc: s.ssrc, framesDecoded: s.framesDecoded || 0,
        framesReceived: s.framesReceived || 0, keyFramesDecoded: s.keyFramesDecoded || 0,
        packetsReceived: s.packetsReceived || 0, packetsLost: s.packetsLost || 0,
        nackCount: s.nackCount || 0, pliCount: s.pliCount || 0,
        retransmittedPacketsReceived: s.retransmittedPacketsReceived || 0,
        freezeCount: s.freezeCount || 0, totalFreezesDuration: s.totalFreezesDuration || 0,
        framesDropped: s.framesDropped || 0,
        jitterBufferDelay: s.jitterBufferDelay || 0,
        jitterBufferEmittedCount: s.jitterBufferEmittedCount || 0,
        jitterBufferTargetDelay: s.jitterBufferTargetDelay || 0,
        state: pc.connectionState, ice: pc.iceConnectionState,
      });
    });
  }
  return out;
}
"""

OUTBOUND = """
async () => {
  const out = [];
  for (const pc of window.__pcs || []) {
    if (pc.connectionState === "closed") continue;
    (await pc.getStats()).forEach((s) => {
      if (s.type !== "outbound-rtp" || s.kind !== "video") return;
      out.push({
        framesEncoded: s.framesEncoded || 0, keyFramesEncoded: s.keyFramesEncoded || 0,
        pliCount: s.pliCount || 0, nackCount: s.nackCount || 0,
        retransmittedPacketsSent: s.retransmittedPacketsSent || 0,
        targetBitrate: s.targetBitrate || 0, frameWidth: s.frameWidth || 0,
        rid: s.rid || null, bytesSent: s.bytesSent || 0,
        qualityLimitationReason: s.qualityLimitationReason || null,
        state: pc.connectionState,
      });
    });
  }
  return out;
}
"""


KEYFRAME_LOG = """
(() => {
  // Every 100 ms: [wall-clock ms, key frames decoded, PLIs sent] of the received video.
  window.__keyframes = [];
  setInterval(async () => {
    let keys = 0, plis = 0;
    for (const pc of window.__pcs) {
      if (pc.connectionState === "closed") continue;
      (await pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") {
          keys += s.keyFramesDecoded || 0;
          plis += s.pliCount || 0;
        }
      });
    }
    window.__keyframes.push([performance.timeOrigin + performance.now(), keys, plis]);
  }, 100);
})();
"""
"""Add to ``WATCH`` (as ``init``) to tell key-frame waits from other pauses."""


async def open_watched(browser: Browser, url: str, room: str, identity: str, *,
                       role: str = "speaker", init: str = "",
                       viewport: tuple[int, int] = (640, 480)) -> MeetingPage:
    """Like MeetingPage.join, with ``WATCH`` (and ``init``) run before the page's scripts."""
    context = await browser.new_context(
        permissions=["camera", "microphone"] if role != "listener" else [],
        viewport={"width": viewport[0], "height": viewport[1]})
    await context.add_init_script(WATCH + init)
    meeting = MeetingPage(await context.new_page(), identity)
    await meeting.page.goto(url.rstrip("/") + "/?token=" + token(room, identity, role=role))
    await meeting.wait_ready()
    meeting.participant_id = await meeting.page.evaluate("parley.participantId")
    return meeting


async def frame_times(page: MeetingPage, participant: str) -> list[float]:
    """Wall-clock seconds at which each frame of ``participant``'s video was presented."""
    times: list[float] = await page.page.evaluate(
        "(who) => (window.__frames[who] || []).slice()", participant)
    return [t / 1000.0 for t in times]


async def sized_frames(page: MeetingPage, participant: str) -> list[tuple[float, int]]:
    """(wall-clock seconds, width) of each frame of ``participant``'s video presented."""
    rows: list[list[float]] = await page.page.evaluate(
        "(who) => (window.__frames[who] || []).map((t, i) => [t, window.__widths[who][i]])",
        participant)
    return [(t / 1000.0, int(w)) for t, w in rows]


async def inbound(page: MeetingPage) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await page.page.evaluate(INBOUND)
    return result


async def outbound(page: MeetingPage) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await page.page.evaluate(OUTBOUND)
    return result


async def keyframe_log(page: MeetingPage) -> list[tuple[float, int, int]]:
    """(wall-clock seconds, key frames decoded, PLIs sent) every 100 ms (``KEYFRAME_LOG``)."""
    rows: list[list[float]] = await page.page.evaluate("window.__keyframes.slice()")
    return [(t / 1000.0, int(k), int(p)) for t, k, p in rows]


def keyframe_wait(gap: Gap, log: list[tuple[float, int, int]], slack: float = 0.25) -> bool:
    """The pause ended with a key frame (or a PLI was sent during it): the viewer
    waited for a key frame."""
    before = [row for row in log if row[0] <= gap.start]
    after = [row for row in log if row[0] >= gap.start + gap.seconds + slack]
    if not before or not after:
        return True  # not covered by the log: cannot tell
    return after[0][1] > before[-1][1] or after[0][2] > before[-1][2]


@dataclass(frozen=True, kw_only=True)
class Gap:
    start: float
    """Wall-clock time of the last frame before the gap."""
    seconds: float


def gaps(times: list[float], at_least: float) -> list[Gap]:
    """Pauses of ``at_least`` seconds between consecutive presented frames."""
    return [Gap(start=a, seconds=b - a) for a, b in pairwise(times)
            if b - a >= at_least]


def steady_from(times: list[float], after: float, *, run: float = 1.0,
                max_gap: float = 0.3) -> float | None:
    """The first frame after ``after`` that starts ``run`` seconds of video with no
    pause over ``max_gap``: where playback is advancing again. None: not (yet)."""
    later = [t for t in times if t >= after]
    for i, start in enumerate(later):
        for prev, cur in pairwise(later[i:]):
            if cur - prev > max_gap:
                break
            if cur - start >= run:
                return start
    return None


__all__ = ["INBOUND", "KEYFRAME_LOG", "OUTBOUND", "STEP", "WATCH", "Gap", "frame_times", "gaps",
           "inbound", "keyframe_log", "keyframe_wait", "open_watched", "outbound", "sized_frames",
           "steady_from"]
