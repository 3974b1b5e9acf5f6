"""The bandwidth suite's comparison: one squeeze, with and without simulcast, in one run.

Each case is a fresh node in this process (default config: renditions on) with the
meeting page in Chromium publishing its fake camera at 1280x720, and two aiortc
listeners whose subscribe connections go through UDP relays (tests/netimpair.py): one
clean, one squeezed to 300 kbit/s by the relay's token bucket (no other loss). The
cases differ only in what the publisher sends and in the REMB policy:

- ``single``: one encoding (VP8, temporal layers L1T3); the REMB leaves outliers out
  (``outlier_ratio`` 0.5, the default);
- ``single-min``: the same, with ``outlier_ratio`` 0: the REMB follows the smallest
  share, as it did before outliers were left out (the baseline of the policy);
- ``simulcast``: the page's three encodings (a quarter, half and full size).

Once the clean listener's received bitrate has settled, the case samples, every
``sample_every`` seconds, what each listener's relay delivered, the squeezed listener's
video frames, the REMB target sent to the publisher and how the squeezed listener's
video is served (layer, rendition, pause), through ``clean``, ``squeezed`` and
``lifted`` phases. Figures: the clean listener's bitrate while the other is squeezed
(after ``settle`` seconds), next to its bitrate before the squeeze and in the second half
of the lifted phase (Chromium may still be ramping up before), and the squeezed
listener's frame rate meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bench.bandwidth_node import (
    KEY,
    SECRET,
    local_node,
    node_config,
    room_member,
    room_router,
    until,
)
from bench.procs import BenchError
from bench.report import Row
from sfu.bandwidth import BandwidthConfig
from signaling.auth import mint_token
from tests.netimpair import Impairment, RelayedClient, steady_bps

CASES = ("single", "single-min", "simulcast")
SQUEEZE = Impairment(rate_bps=300_000)
"""The squeezed listener's downlink: a token bucket, as in the issue's measurement."""

CHROMIUM_ARGS = ("--use-fake-device-for-media-stream", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--allow-loopback-in-peer-connection",
                 "--disable-features=WebRtcHideLocalIpsWithMdns")

_HOOKS = """
(() => {
  window.__parleySingleEncoding = %s;
  const devices = navigator.mediaDevices;
  if (devices && devices.getUserMedia) {
    const open = devices.getUserMedia.bind(devices);
    devices.getUserMedia = (constraints) => {
      if (constraints && constraints.video) {
        const video = typeof constraints.video === "object" ? constraints.video : {};
        const big = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
        constraints = { ...constraints, video: { ...video, ...big } };
      }
      return open(constraints);
    };
  }
})();
"""


@dataclass(frozen=True, kw_only=True)
class ComparePlan:
    clean: float = 10.0
    """Seconds sampled before the squeeze (after the clean bitrate settled)."""
    squeezed: float = 20.0
    lifted: float = 10.0
    settle: float = 8.0
    """Seconds into the squeeze before samples count as 'while squeezed'."""
    sample_every: float = 0.5


FULL = ComparePlan()
QUICK = ComparePlan(clean=3.0, squeezed=10.0, lifted=3.0, settle=5.0)


@contextlib.asynccontextmanager
async def _chromium() -> AsyncIterator[Any]:
    executable = shutil.which("chromium")
    if executable is None:
        raise BenchError("chromium is not installed")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable,
                                                   args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            await browser.close()


async def compare(plan: ComparePlan) -> dict[str, Any]:
    """Every case of :data:`CASES`, one after the other, with one browser."""
    async with _chromium() as browser:
        return {case: await _case(browser, plan, case) for case in CASES}


def _served(consumer: Any) -> str:
    if consumer is None:
        return "none"
    if consumer.rendition is not None:
        return "rendition"
    if consumer.bandwidth_paused:
        return "paused"
    if consumer.switch is not None:
        return f"layer {consumer.switch.current}"
    return f"temporal {consumer.layer}"


async def _case(browser: Any, plan: ComparePlan, case: str) -> dict[str, Any]:
    bandwidth = BandwidthConfig(outlier_ratio=0.0) if case == "single-min" \
        else BandwidthConfig()
    room = f"bwcompare-{case}"
    async with local_node(node_config(bandwidth)) as (url, node):
        def tok(identity: str, role: str) -> str:
            return mint_token(key=KEY, secret=SECRET, room=room, identity=identity, role=role)

        context = await browser.new_context(permissions=["camera", "microphone"],
                                            viewport={"width": 1280, "height": 720})
        await context.add_init_script(_HOOKS % ("false" if case == "simulcast" else "true"))
        clean = RelayedClient(url, tok("clean", "listener"), decode=False)
        squeezed = RelayedClient(url, tok("squeezed", "listener"), decode=False)
        try:
            page = await context.new_page()
            await page.goto(f"{url}/?token={tok('camera', 'speaker')}")
            await page.wait_for_function("window.parley && parley.publishing", timeout=30_000)
            for client in (clean, squeezed):
                await client.connect()
            await until(lambda: clean.frames_of("video") > 60
                         and squeezed.frames_of("video") > 60, "video at both listeners", 30)
            if not clean.relays or not squeezed.relays:
                raise BenchError("a listener's media bypassed its relay")
            settled = await steady_bps(clean, timeout=45.0)
            result = await _sample(plan, node, room, clean, squeezed)
            return {"settled_bps": settled, **result}
        finally:
            for client in (clean, squeezed):
                await client.close()
            await context.close()


def _bytes(client: RelayedClient) -> int:
    return sum(r.bytes_to_client for r in client.relays.values())


async def _sample(plan: ComparePlan, node: Any, room: str, clean: RelayedClient,
                  squeezed: RelayedClient) -> dict[str, Any]:
    router = room_router(node, room)
    member = room_member(node, room, "squeezed")
    if router is None or member is None:
        raise BenchError("comparison room is not set up")
    producer = next(p for p in router.producers.values() if p.kind == "video")
    consumer = next((c for c in member.consumers.values() if c.kind == "video"), None)
    phases = ((-plan.clean, "clean", Impairment()), (0.0, "squeezed", SQUEEZE),
              (plan.squeezed, "lifted", Impairment()))
    origin = time.monotonic() + plan.clean  # t = 0: the squeeze starts
    samples: list[dict[str, Any]] = []
    last = (time.monotonic() - origin, _bytes(clean), _bytes(squeezed),
            squeezed.frames_of("video"))
    phase = -1
    while (t := time.monotonic() - origin) < plan.squeezed + plan.lifted:
        while phase + 1 < len(phases) and t >= phases[phase + 1][0]:
            phase += 1
            squeezed.impair(phases[phase][2])
        await asyncio.sleep(plan.sample_every)
        now = (time.monotonic() - origin, _bytes(clean), _bytes(squeezed),
               squeezed.frames_of("video"))
        dt = max(now[0] - last[0], 1e-3)
        samples.append({
            "t": round(now[0], 3), "phase": phases[phase][1],
            "clean_bps": round((now[1] - last[1]) * 8 / dt),
            "squeezed_bps": round((now[2] - last[2]) * 8 / dt),
            "squeezed_fps": round((now[3] - last[3]) / dt, 1),
            "remb_target": producer.link.target or 0, "served": _served(consumer),
            "layers": len(producer.layers)})
        last = now
    return {"samples": samples, "impairment": {"rate_bps": SQUEEZE.rate_bps},
            "relay_dropped": sum(r.dropped for r in squeezed.relays.values())}


def figures(result: dict[str, Any], plan: ComparePlan) -> dict[str, Any]:
    """Per case: the clean listener's bitrate before and while the other is squeezed, the
    squeezed listener's frame rate and bitrate meanwhile, and how it was served."""
    out: dict[str, Any] = {}
    for case, traced in result.items():
        samples = traced["samples"]
        before = [s for s in samples if s["phase"] == "clean"]
        during = [s for s in samples if s["phase"] == "squeezed" and s["t"] >= plan.settle]
        after = [s for s in samples if s["phase"] == "lifted"
                 and s["t"] >= plan.squeezed + plan.lifted / 2]

        def mean(rows: list[dict[str, Any]], key: str) -> float:
            return sum(r[key] for r in rows) / len(rows) if rows else 0.0

        clean_before, clean_during = mean(before, "clean_bps"), mean(during, "clean_bps")
        clean_after = mean(after, "clean_bps")
        out[case] = {
            "clean_before_bps": round(clean_before), "clean_during_bps": round(clean_during),
            "clean_ratio": round(clean_during / clean_before, 3) if clean_before else None,
            "clean_after_bps": round(clean_after),
            "clean_ratio_lifted": round(clean_during / clean_after, 3) if clean_after else None,
            "squeezed_fps_during": round(mean(during, "squeezed_fps"), 1),
            "squeezed_bps_during": round(mean(during, "squeezed_bps")),
            "remb_before": round(mean(before, "remb_target")),
            "remb_during": round(mean(during, "remb_target")),
            "served_during": sorted({s["served"] for s in during}),
            "relay_dropped": traced["relay_dropped"]}
    return out


LABELS = {"single": "one encoding", "single-min": "one encoding, smallest-share REMB",
          "simulcast": "simulcast (3 encodings)"}


def rows(f: dict[str, Any]) -> list[Row]:
    out = []
    for case, c in f.items():
        out.append(Row(
            figure=f"{LABELS[case]}: clean listener while the other is squeezed",
            value=f"{c['clean_during_bps'] / 1000:.0f} kbit/s",
            note=f"{(c['clean_ratio_lifted'] or 0):.0%} of its rate in the lifted phase "
                 f"({c['clean_after_bps'] / 1000:.0f}), {(c['clean_ratio'] or 0):.0%} of its "
                 f"rate before ({c['clean_before_bps'] / 1000:.0f}); REMB "
                 f"{c['remb_before'] / 1000:.0f} -> {c['remb_during'] / 1000:.0f} kbit/s"))
        out.append(Row(
            figure=f"{LABELS[case]}: squeezed listener (300 kbit/s token bucket)",
            value=f"{c['squeezed_fps_during']:.1f} fps",
            note=f"{c['squeezed_bps_during'] / 1000:.0f} kbit/s received; served: "
                 + ", ".join(c["served_during"])))
    return out


def plot(result: dict[str, Any], bitrate: Any, fps: Any) -> None:
    """Two matplotlib axes: the clean listener's received bitrate and the squeezed
    listener's frame rate, every case, against seconds since the squeeze."""
    for case, traced in result.items():
        samples = traced["samples"]
        t = [s["t"] for s in samples]
        bitrate.plot(t, _smooth([s["clean_bps"] / 1000 for s in samples]), label=LABELS[case])
        fps.plot(t, _smooth([s["squeezed_fps"] for s in samples]), label=LABELS[case])
    squeezed = [s["t"] for s in next(iter(result.values()))["samples"]
                if s["phase"] == "squeezed"]
    for axis, title, unit in ((bitrate, "clean listener: received (2 s mean)", "kbit/s"),
                              (fps, "squeezed listener: video (2 s mean)", "frames/s")):
        if squeezed:
            axis.axvspan(squeezed[0], squeezed[-1], color="orange", alpha=0.12)
        axis.set_title(title, fontsize=9)
        axis.set_ylabel(unit)
        axis.set_xlabel("seconds since the squeeze (Chromium publisher)")
        axis.grid(alpha=0.3)
        axis.legend(loc="lower left", fontsize=7)
    bitrate.set_ylim(bottom=0)
    fps.set_ylim(bottom=0)


def _smooth(values: list[float], width: int = 4) -> list[float]:
    """Mean of each value and the ``width - 1`` before it (a sample is half a second)."""
    return [sum(values[max(0, i - width + 1):i + 1]) / len(values[max(0, i - width + 1):i + 1])
            for i in range(len(values))]
