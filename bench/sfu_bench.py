"""The SFU suite: media forwarding through one node, against a transcoding baseline.

The node runs as ``parley serve`` in its own process; the load runs as
``parley loadtest`` in another (publishers loop pre-encoded VP8 and Opus,
subscribers count frames without decoding). The node is measured from outside:
CPU and RSS from ``/proc``, forwarding counters and the latency histogram from
its ``/metrics``. The baseline is the same node with ``sfu.transcode: true``
(decode each track once, re-encode it for every subscriber, as aiortc's
MediaRelay does), the same load and the same process layout.

Phases:

1. **compare**: one room, publishers with video and audio, subscribers;
   forwarding, then the baseline. Each is measured over a window that starts
   once every consumer exists on the node, plus a short warm-up.
2. **saturation** (forwarding only): one room, one video-only publisher,
   more subscribers at each step, until the node uses ~90% of a core, the
   subscribers receive under 95% of the frames sent, the load fails to join,
   or the phase's time budget is spent.

See docs/BENCHMARKS.md ("SFU forwarding") for what each figure means.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.procs import (
    BenchError,
    LoadGenerator,
    ServerProcess,
    free_port,
    parley_script,
)
from bench.report import Row, SuiteResult
from bench.sfu_fastpath import fast_path_phase, fast_path_rows
from bench.sfu_sendpath import send_path_phase, send_path_rows
from client.media import encode_video

NAME = "sfu"
KEY = "sfu-bench"
SECRET = "sfu-bench-secret-0123456789abcdef"
"""32+ bytes, so PyJWT does not warn about a short HMAC key."""
AUDIO_FPS = 50
"""Opus frames per second (20 ms) sent by ``parley loadtest``."""
WARM = 2.0
"""Seconds between every consumer existing and the start of the measured window."""
OTHER_LOAD_RETRY = 0.4
"""A measurement during which other processes used more than this share of a core is
repeated once (compare phase: always; saturation: when the step fell short). The machine
is shared; the JSON result keeps both attempts."""
JOIN_TIMEOUT = 20.0
"""``parley loadtest`` gives up joining after this long (``LoadSpec.join_timeout``)."""


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Sizes and durations of one run of the suite."""

    publishers: int = 2
    """Compare phase: publishers in the one room, each sending video and audio."""
    subscribers: int = 4
    """Compare phase: subscribers in the one room."""
    window: float = 12.0
    """Compare phase: measured seconds per node."""
    steps: tuple[int, ...] = (10, 20, 40, 60, 80, 100, 120, 150, 180, 220)
    """Saturation phase: subscribers of the one video-only publisher, step by step."""
    step_window: float = 8.0
    """Saturation phase: measured seconds per step."""
    saturation_budget: float = 200.0
    """Saturation phase: no new step starts after this many seconds."""
    cpu_stop: float = 0.9
    """Saturation phase: stop after a step where the node used this share of a core."""
    delivered_stop: float = 0.95
    """Saturation phase: stop after a step where subscribers got less of the frames."""
    fan_outs: tuple[int, ...] = (40, 150)
    """Fast-path phase: subscribers of the one video-only publisher, each measured with
    aiortc's sender and with the fast path (``sfu.fast_path``); also the send path alone,
    in this process (bench/sfu_sendpath.py)."""
    send_path_seconds: float = 4.0
    """Send-path comparison: paced seconds measured per path and fan-out."""


FULL = Plan()
QUICK = Plan(publishers=1, subscribers=2, window=3.0, steps=(4, 8), step_window=2.0,
             saturation_budget=30.0, fan_outs=(8,), send_path_seconds=2.0)

_COMMON = {"signaling": {"rate_limit_per_second": 1000, "rate_limit_burst": 1000,
                         # every client comes from 127.0.0.1: no per-IP caps
                         "max_connections_per_ip": 0, "join_rate_per_ip": 0},
           "rooms": {"max_participants": 1000},
           "bandwidth": {"enabled": False}}
FORWARD_CONFIG = {"sfu": {"ice_addresses": ["127.0.0.1"]}, **_COMMON}
"""The node's config (written as JSON, which is YAML): loopback ICE, no rate or room limit,
and no bandwidth adaptation: on loopback every loss comes from CPU contention with the load
generator, and adaptation answering it (pausing, renditions) would measure something else."""
TRANSCODE_CONFIG = {"sfu": {"ice_addresses": ["127.0.0.1"], "transcode": True}, **_COMMON}
"""The baseline: the same, plus ``sfu.transcode``."""


# -- processes ---------------------------------------------------------------
def clean_env() -> dict[str, str]:
    """The driver's environment without PARLEY_* settings, so only the bench config counts."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}


def node_process(config_path: Path, label: str) -> ServerProcess:
    port = free_port()
    argv = [parley_script(), "serve", "--port", str(port), "--config", str(config_path),
            "--keys", f"{KEY}:{SECRET}", "--log-level", "warning"]
    return ServerProcess(label, argv, port=port, env=clean_env())


def load_generator(*, port: int, publishers: int, subscribers: int, duration: float,
                   audio: bool, prefix: str) -> LoadGenerator:
    return LoadGenerator(url=f"http://127.0.0.1:{port}", keys=f"{KEY}:{SECRET}",
                         publishers=publishers, subscribers=subscribers, duration=duration,
                         audio=audio, prefix=prefix, env=clean_env())


# -- reading the node ----------------------------------------------------------
def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → ``{"name{labels}": value}`` (comments skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def _buckets(metrics: dict[str, float], name: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of a histogram, in bound order."""
    prefix = f'{name}_bucket{{le="'
    found = [(float(key[len(prefix):-2]), value)
             for key, value in metrics.items() if key.startswith(prefix)]
    return sorted(found)


def histogram_quantile(before: dict[str, float], after: dict[str, float], name: str,
                       q: float) -> float | None:
    """Quantile of the observations made between two scrapes; linear within a bucket.

    An answer in the ``+Inf`` bucket is the highest finite bound (a lower bound).
    """
    start = dict(_buckets(before, name))
    buckets = [(bound, count - start.get(bound, 0.0)) for bound, count in _buckets(after, name)]
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower


def machine_busy_seconds() -> float:
    """CPU-seconds the whole machine spent busy so far (``/proc/stat``, all cores)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def udp_receive_buffer_errors() -> int:
    """Datagrams the kernel dropped because a UDP socket's buffer was full.

    Counted for the whole network namespace (``/proc/net/snmp``), so other
    processes' drops are included; on loopback it shows a receiver not keeping up.
    """
    rows = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
            if line.startswith("Udp:")]
    return int(dict(zip(rows[0], rows[1], strict=True))["RcvbufErrors"])


@dataclass(frozen=True, kw_only=True)
class Sample:
    """The node, the load generator and the machine at one instant."""

    at: float
    node_cpu: float
    load_cpu: float
    machine_busy: float
    udp_drops: int
    metrics: dict[str, float]


async def _scrape(http: aiohttp.ClientSession, node: ServerProcess) -> dict[str, float]:
    url = f"http://127.0.0.1:{node.port}/metrics"
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
        return parse_metrics(await resp.text())


async def _sample(http: aiohttp.ClientSession, node: ServerProcess,
                  load: LoadGenerator) -> Sample:
    metrics = await _scrape(http, node)
    return Sample(at=time.monotonic(), node_cpu=node.cpu_seconds(), load_cpu=load.cpu_seconds(),
                  machine_busy=machine_busy_seconds(), udp_drops=udp_receive_buffer_errors(),
                  metrics=metrics)


async def _wait_consumers(http: aiohttp.ClientSession, node: ServerProcess,
                          load: LoadGenerator, expected: int) -> float:
    """Wait until the node has ``expected`` consumers; returns the seconds it took."""
    started = time.monotonic()
    deadline = started + JOIN_TIMEOUT + 10.0
    while time.monotonic() < deadline:
        if not load.running():
            raise load.failure("exited before every subscriber was consuming")
        metrics = await _scrape(http, node)
        if metrics.get("parley_sfu_consumers", 0.0) >= expected:
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise load.failure(f"node did not reach {expected} consumers")


# -- one measured load ------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Load:
    """One room's worth of load against one node."""

    publishers: int
    subscribers: int
    audio: bool
    window: float
    prefix: str


def _window_figures(a: Sample, b: Sample, kinds: int) -> dict[str, Any]:
    wall = b.at - a.at
    node_cpu = b.node_cpu - a.node_cpu
    load_cpu = b.load_cpu - a.load_cpu
    busy = b.machine_busy - a.machine_busy

    def delta(name: str) -> float:
        return b.metrics.get(name, 0.0) - a.metrics.get(name, 0.0)

    consumers = b.metrics.get("parley_sfu_consumers", 0.0)
    streams = consumers / kinds
    packets = delta("parley_sfu_forwarded_packets_total")
    frames = delta("parley_sfu_forwarded_frames_total")
    latency = "parley_sfu_forward_latency_seconds"
    return {
        "window_s": wall,
        "node_consumers": consumers,
        "node_video_streams": streams,
        "node_cpu_s": node_cpu,
        "node_cpu_share": node_cpu / wall,
        "load_cpu_share": load_cpu / wall,
        "machine_busy_share": busy / wall,
        "other_cpu_share": max(0.0, busy - node_cpu - load_cpu) / wall,
        "node_cpu_per_stream_s": node_cpu / (streams * wall) if streams else None,
        "packets_per_s": packets / wall,
        "packets_per_cpu_s": packets / node_cpu if packets and node_cpu else None,
        "mbit_per_s": delta("parley_sfu_forwarded_bytes_total") * 8 / wall / 1e6,
        "frames_handed_out_per_s": delta(f"{latency}_count") / wall,
        "bytes_per_frame": delta("parley_sfu_forwarded_bytes_total") / frames if frames else None,
        "packets_per_frame": packets / frames if frames else None,
        "keyframe_requests_per_s": delta("parley_sfu_keyframe_requests_received_total") / wall,
        "retransmitted_per_s": delta("parley_sfu_retransmitted_packets_total") / wall,
        "udp_receive_buffer_drops": b.udp_drops - a.udp_drops,
        "latency_p50_s": histogram_quantile(a.metrics, b.metrics, latency, 0.5),
        "latency_p99_s": histogram_quantile(a.metrics, b.metrics, latency, 0.99),
        "latency_mean_s": (delta(f"{latency}_sum") / delta(f"{latency}_count")
                           if delta(f"{latency}_count") else None),
    }


def _load_figures(load: Load, out: dict[str, Any]) -> dict[str, Any]:
    fps = float(out["clip_fps"])
    expected = load.publishers * load.subscribers * (fps + (AUDIO_FPS if load.audio else 0))
    received = float(out["frames_received_per_second"])
    return {
        "expected_frames_per_s": expected,
        "received_frames_per_s": received,
        "delivered": received / expected if expected else None,
        "streams_receiving": out["video_streams_receiving"],
        "streams_expected": out["video_streams"],
        "join_to_first_frame_p50_s": out["join_to_first_frame_p50"],
        "join_to_first_frame_p99_s": out["join_to_first_frame_p99"],
        "clip_bitrate": out["clip_bitrate"],
        "clip_bytes_per_frame": float(out["clip_bitrate"]) / 8 / fps,
        "loadtest_window_s": out["measured_seconds"],
    }


async def measure(config: dict[str, Any], load: Load, label: str) -> dict[str, Any]:
    """Start a node, put ``load`` on it, measure one window; everything is killed after."""
    kinds = 2 if load.audio else 1
    participants = load.publishers + load.subscribers
    with tempfile.TemporaryDirectory(prefix="parley-sfu-bench-") as tmp:
        path = Path(tmp) / "node.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        async with node_process(path, label) as node, aiohttp.ClientSession() as http:
            await asyncio.sleep(1.0)
            rss_before = node.rss_kib()
            # The load's own window starts min(3, D/3) s after its joins; ours 2 s after the
            # last consumer exists; a little extra duration keeps ours inside the load.
            async with load_generator(port=node.port, publishers=load.publishers,
                                     subscribers=load.subscribers, duration=load.window + 2.0,
                                     audio=load.audio, prefix=load.prefix) as gen:
                joined_in = await _wait_consumers(
                    http, node, gen, load.publishers * load.subscribers * kinds)
                await asyncio.sleep(WARM)
                first = await _sample(http, node, gen)
                await asyncio.sleep(load.window)
                last = await _sample(http, node, gen)
                rss_after = node.rss_kib()
                out = await gen.result(timeout=load.window + JOIN_TIMEOUT + 30.0)
    figures = {
        "label": label,
        "load": asdict(load),
        "consumers_up_s": joined_in,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "participants": participants,
        "kib_per_participant": (rss_after - rss_before) / participants,
        **_window_figures(first, last, kinds),
        **_load_figures(load, out),
        "loadavg_1min_after": os.getloadavg()[0],
    }
    node_expected = figures["node_video_streams"] * (
        float(out["clip_fps"]) + (AUDIO_FPS if load.audio else 0))
    figures["node_handed_out"] = (figures["frames_handed_out_per_s"] / node_expected
                                  if node_expected else None)
    delivered = figures["delivered"]
    cpu_per_stream = figures["node_cpu_per_stream_s"]
    figures["node_cpu_per_delivered_stream_s"] = (
        cpu_per_stream / delivered if cpu_per_stream and delivered else None)
    return figures


# -- phases ----------------------------------------------------------------------
async def compare(plan: Plan) -> dict[str, Any]:
    load = Load(publishers=plan.publishers, subscribers=plan.subscribers, audio=True,
                window=plan.window, prefix="cmp")
    disturbed: list[dict[str, Any]] = []

    async def undisturbed(config: dict[str, Any], label: str) -> dict[str, Any]:
        figures = await measure(config, load, label)
        if figures["other_cpu_share"] > OTHER_LOAD_RETRY:
            disturbed.append(figures)
            figures = await measure(config, load, label)
        return figures

    forward = await undisturbed(FORWARD_CONFIG, "parley serve (forwarding)")
    transcode = await undisturbed(TRANSCODE_CONFIG, "parley serve (sfu.transcode)")

    def ratio(name: str) -> float | None:
        a, b = transcode[name], forward[name]
        return a / b if a is not None and b else None

    return {"forward": forward, "transcode": transcode, "disturbed_attempts": disturbed,
            "ratio_cpu_per_stream_s": ratio("node_cpu_per_stream_s"),
            "ratio_cpu_per_delivered_stream_s": ratio("node_cpu_per_delivered_stream_s")}


def _stop_reason(step: dict[str, Any], plan: Plan) -> str | None:
    if step["node_cpu_share"] >= plan.cpu_stop:
        return f"node CPU {step['node_cpu_share']:.0%} of a core"
    if step["delivered"] is None or step["delivered"] < plan.delivered_stop:
        return f"subscribers received {step['delivered']:.1%} of the frames"
    return None


def _disturbed(step: dict[str, Any], plan: Plan) -> bool:
    """Subscribers fell short while other processes held more than ``OTHER_LOAD_RETRY``."""
    return step["other_cpu_share"] > OTHER_LOAD_RETRY and _stop_reason(step, plan) is not None \
        and step["node_cpu_share"] < plan.cpu_stop


async def _step(plan: Plan, subscribers: int) -> list[dict[str, Any]]:
    """One saturation step; repeated once if other load on the machine disturbed it."""
    attempts: list[dict[str, Any]] = []
    for attempt in range(2):
        load = Load(publishers=1, subscribers=subscribers, audio=False,
                    window=plan.step_window, prefix=f"sat{subscribers}-{attempt}")
        try:
            step = await measure(FORWARD_CONFIG, load, f"parley serve ({subscribers} subscribers)")
        except BenchError as exc:
            attempts.append({"load": asdict(load), "failed": str(exc)[:500]})
            break
        attempts.append(step)
        if not _disturbed(step, plan):
            break
    return attempts


async def saturation(plan: Plan) -> dict[str, Any]:
    started = time.monotonic()
    steps: list[dict[str, Any]] = []
    reason = "every step ran"
    for subscribers in plan.steps:
        if time.monotonic() - started > plan.saturation_budget:
            reason = f"time budget ({plan.saturation_budget:.0f} s) spent"
            break
        attempts = await _step(plan, subscribers)
        steps += attempts
        step = attempts[-1]
        if "failed" in step:
            reason = f"{subscribers} subscribers could not be set up"
            break
        stop = _stop_reason(step, plan)
        if stop is not None:
            reason = f"{stop} at {subscribers} subscribers"
            break
    sustained = [s for s in steps if "failed" not in s
                 and s["delivered"] is not None and s["delivered"] >= plan.delivered_stop]
    best = max(sustained, key=lambda s: s["node_video_streams"], default=None)
    return {"steps": steps, "stopped": reason, "best": best,
            "streams_per_core_extrapolated": (best["node_video_streams"] / best["node_cpu_share"]
                                              if best and best["node_cpu_share"] else None)}


# -- the table --------------------------------------------------------------------
def _fmt(value: float | None, spec: str = ".2f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def _ms(value: float | None, spec: str = ".2f") -> str:
    return _fmt(None if value is None else value * 1000, spec, " ms")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _health(f: dict[str, Any]) -> str:
    return (f"node {f['node_cpu_share']:.0%} of a core, loadtest {f['load_cpu_share']:.0%}, "
            f"other processes {f['other_cpu_share']:.0%}; node sent "
            f"{_pct(f['node_handed_out'])} of the frames, subscribers got {_pct(f['delivered'])}")


def _compare_rows(c: dict[str, Any]) -> list[Row]:
    fw, tc = c["forward"], c["transcode"]
    setup = (f"1 room, {fw['load']['publishers']} publishers (video+audio) x "
             f"{fw['load']['subscribers']} subscribers; node forwards "
             f"{fw['node_video_streams']:.0f} video streams; {fw['window_s']:.0f} s")
    rows = []
    for tag, f in (("forwarding", fw), ("transcoding baseline", tc)):
        rows += [
            Row(figure=f"node CPU per video stream-second ({tag})",
                value=_ms(f["node_cpu_per_stream_s"], ".1f"),
                note=(setup if f is fw else "") + ("; " if f is fw else "") + _health(f)),
            Row(figure=f"forwarded RTP packets/s ({tag})",
                value=_fmt(f["packets_per_s"], ",.0f") if f["packets_per_s"] else "not counted",
                note=(f"{_fmt(f['packets_per_cpu_s'], ',.0f')} per node CPU-second, "
                      f"{f['mbit_per_s']:.1f} Mbit/s" if f["packets_per_s"]
                      else "the baseline's encoder packetizes; the counter is not fed")),
            Row(figure=f"added latency p50 / p99 ({tag})",
                value=f"{_ms(f['latency_p50_s'])} / {_ms(f['latency_p99_s'])}",
                note="last packet in → handed to the packetizer (the baseline: to the encoder)"),
            Row(figure=f"node RSS per participant ({tag})",
                value=_fmt(f["kib_per_participant"], ",.0f", " KiB"),
                note=f"{f['participants']} participants: RSS {f['rss_before_kib'] / 1024:.0f} → "
                     f"{f['rss_after_kib'] / 1024:.0f} MiB"),
            Row(figure=f"join → first frame p50 / p99 ({tag})",
                value=f"{_ms(f['join_to_first_frame_p50_s'])} / "
                      f"{_ms(f['join_to_first_frame_p99_s'])}",
                note="subscriber connect → first video key frame, from parley loadtest"),
        ]
    rows.append(Row(figure="CPU per stream-second, baseline ÷ forwarding",
                    value=_fmt(c["ratio_cpu_per_stream_s"], ".1f", "x"),
                    note=f"per delivered stream-second: "
                         f"{_fmt(c['ratio_cpu_per_delivered_stream_s'], '.1f', 'x')}; bar ≥ 10x"
                         + (f"; {len(c['disturbed_attempts'])} measurement(s) repeated because "
                            "of other load" if c["disturbed_attempts"] else "")))
    return rows


def _saturation_rows(s: dict[str, Any]) -> list[Row]:
    rows = []
    for step in s["steps"]:
        subs = f"{step['load']['subscribers']}"
        if step["load"]["prefix"].endswith("-1"):
            subs += " (repeated: other load disturbed the first)"
        if "failed" in step:
            rows.append(Row(figure=f"saturation: 1 publisher x {subs}", value="failed",
                            note=step["failed"].splitlines()[0]))
            continue
        rows.append(Row(
            figure=f"saturation: 1 publisher x {subs}",
            value=f"node {step['node_cpu_share']:.0%} CPU",
            note=f"{step['packets_per_s']:,.0f} pkt/s, {step['mbit_per_s']:.0f} Mbit/s, "
                 f"{_fmt(step['packets_per_cpu_s'], ',.0f')} pkt per CPU-s; loadtest "
                 f"{step['load_cpu_share']:.0%}, other {step['other_cpu_share']:.0%}; "
                 f"node sent {_pct(step['node_handed_out'])} of the frames, subscribers got "
                 f"{_pct(step['delivered'])}, UDP buffer drops {step['udp_receive_buffer_drops']}; "
                 f"latency p99 {_ms(step['latency_p99_s'])}"))
    best = s["best"]
    rows.append(Row(
        figure="max sustained video streams (one node process)",
        value=_fmt(best and best["node_video_streams"], ".0f"),
        note=f"stopped: {s['stopped']}; at that step the node used "
             f"{_fmt(best and best['node_cpu_share'] * 100, '.0f', '%')} of a core"))
    rows.append(Row(
        figure="video streams per core (extrapolated)",
        value=_fmt(s["streams_per_core_extrapolated"], ".0f"),
        note="max sustained ÷ node CPU share; forwarded packets/s per core = "
             f"{_fmt(best and best['packets_per_cpu_s'], ',.0f')}"))
    return rows


def _video_load(plan: Plan) -> Any:
    def load_of(subscribers: int, prefix: str) -> Load:
        return Load(publishers=1, subscribers=subscribers, audio=False, window=plan.step_window,
                    prefix=prefix)

    return load_of


async def _measure(plan: Plan) -> dict[str, Any]:
    return {"plan": asdict(plan), "nproc": len(os.sched_getaffinity(0)),
            "compare": await compare(plan),
            "send_path": await send_path_phase(
                plan.fan_outs, encode_video(seconds=2.0, bitrate=1_000_000),
                plan.send_path_seconds),
            "fast_path": await fast_path_phase(plan.fan_outs, plan.step_window, FORWARD_CONFIG,
                                               measure, _video_load(plan)),
            "saturation": await saturation(plan)}


def run(*, quick: bool = False) -> SuiteResult:
    plan = QUICK if quick else FULL
    started = time.monotonic()
    figures = asyncio.run(_measure(plan))
    rows = (_compare_rows(figures["compare"]) + send_path_rows(figures["send_path"])
            + fast_path_rows(figures["fast_path"])
            + _saturation_rows(figures["saturation"]))
    return SuiteResult(name=NAME, rows=rows, figures=figures,
                       seconds=time.monotonic() - started)
