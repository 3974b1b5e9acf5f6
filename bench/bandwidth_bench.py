"""The bandwidth suite: what estimation costs, and how the SFU reacts to a squeezed link.

Phases (the node runs in this process, so its Router can be timed directly):

1. **cost**: one room, one ``parley loadtest`` process with one publisher
   (VP8 + Opus) and N subscribers. While the node forwards, its process CPU
   (``time.process_time``; the load runs in the other process) gives the
   forwarding cost per participant-second. Then ``Router.update_bandwidth`` is
   called many times on the same live router, each call timed with
   ``time.thread_time``, and so is one REMB send to the publisher. Their sum,
   at the configured ``update_interval``, is compared with the forwarding cost.
2. **trace**: a publisher (pre-encoded VP8 at ~900 kbit/s + Opus), a clean
   subscriber and a subscriber whose downlink goes through a UDP relay
   (tests/netimpair.py): clean, then 300 kbit/s with 5 % loss, then lifted.
   The REMB target sent to the publisher, the constrained link's estimate,
   its video layer or pause and the frames it receives are sampled; the raw
   trace goes to ``bench/results/`` and a plot to ``docs/bandwidth-trace.png``.
3. **compare** (bench/bandwidth_compare.py): a Chromium publisher, one clean and one
   squeezed listener, with and without simulcast (and with the old smallest-share
   REMB): the clean listener's bitrate and the squeezed one's frame rate; drawn in
   the bottom row of the same plot.

See docs/BENCHMARKS.md ("Bandwidth adaptation").
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import bandwidth_compare
from bench.bandwidth_node import (
    KEY,
    SECRET,
    local_node,
    node_config,
    room_member,
    room_router,
    until,
)
from bench.procs import REPO, BenchError, LoadGenerator
from bench.report import Row, SuiteResult, percentile
from client.client import ParleyClient
from client.media import EncodedTrack, encode_audio, encode_video
from sfu.bandwidth import BandwidthConfig
from sfu.hooks import send_remb
from sfu.router import Router
from signaling.auth import mint_token
from signaling.node import Node
from tests.netimpair import Impairment, RelayedClient

NAME = "bandwidth"
RESULTS = REPO / "bench" / "results"
PLOT = REPO / "docs" / "bandwidth-trace.png"
SQUEEZE = Impairment(rate_bps=300_000, loss=0.05)
"""The constrained subscriber's downlink during the impaired phase."""
SETTLE = 8.0
"""Seconds after the squeeze before what the subscriber receives counts as 'while impaired'."""


@dataclass(frozen=True, kw_only=True)
class Plan:
    subscribers: int = 8
    """Cost phase: subscribers of the one publisher."""
    warm: float = 4.0
    """Cost phase: seconds between every consumer forwarding and the measured window."""
    window: float = 10.0
    """Cost phase: seconds of forwarding measured."""
    calls: int = 2000
    """Cost phase: ``Router.update_bandwidth`` calls timed (in batches of ``batch``)."""
    batch: int = 50
    clean: float = 10.0
    """Trace phase: seconds before the impairment."""
    impaired: float = 20.0
    lifted: float = 20.0
    sample_every: float = 0.25
    plot: bool = True
    compare: bool = True
    """Run the simulcast comparison (needs Chromium and Playwright)."""


FULL = Plan()
QUICK = Plan(subscribers=2, warm=1.0, window=3.0, calls=200, clean=3.0, impaired=8.0,
             lifted=6.0, plot=False)


# -- phase 1: cost -------------------------------------------------------------
def _forwarding(router: Router, subscribers: int) -> bool:
    """Every subscriber has its video and audio consumer and video is flowing."""
    links = [t for t in router.transports if hasattr(t, "consumers") and t.consumers]
    return len(links) >= subscribers and router.stats.frames_out > 30 * subscribers


def _time_calls(router: Router, calls: list[float]) -> Callable[[], None]:
    """Time every call the router's own bandwidth task makes; returns an undo function."""
    original = router.update_bandwidth

    def timed(now: float, dt: float) -> None:
        started = time.thread_time()
        original(now, dt)
        calls.append(time.thread_time() - started)

    router.update_bandwidth = timed  # type: ignore[method-assign]
    return lambda: setattr(router, "update_bandwidth", original)


async def _estimation_cost(router: Router, plan: Plan) -> dict[str, Any]:
    """CPU of one allocation step and of one REMB send, on the live router."""
    steps: list[float] = []
    last = time.monotonic()
    while len(steps) < plan.calls:
        for _ in range(plan.batch):  # no await inside: nothing else runs in between
            now = time.monotonic()
            started = time.thread_time()
            router.update_bandwidth(now, now - last)
            steps.append(time.thread_time() - started)
            last = now
        await asyncio.sleep(0.02)  # let the REMB tasks go out and forwarding catch up
    video = [p for p in router.producers.values() if p.kind == "video"]
    if not video or video[0].assembler.ssrc is None:
        raise BenchError("no video producer to send REMB to")
    producer = video[0]
    receiver = producer._receiver
    ssrc = producer.assembler.ssrc
    assert ssrc is not None, "the producer has received RTP"
    sends: list[float] = []
    for _ in range(200):
        coro = send_remb(receiver, ssrc, 500_000)
        started = time.thread_time()
        try:
            coro.send(None)
        except StopIteration:
            sends.append(time.thread_time() - started)
        else:  # it waited for something: its time would include other work
            coro.close()
            raise BenchError("send_remb suspended; cannot time it alone")
    return {"step_seconds": steps, "remb_send_seconds": sends,
            "video_producers": len(video)}


async def cost(plan: Plan) -> dict[str, Any]:
    config = node_config()
    room = "bwcost-0"
    participants = plan.subscribers + 1
    async with local_node(config) as (url, node):
        duration = plan.warm + plan.window + 15.0
        async with LoadGenerator(url=url, keys=f"{KEY}:{SECRET}", subscribers=plan.subscribers,
                                 duration=duration, prefix="bwcost", bitrate=900_000) as load:
            await until(lambda: (r := room_router(node, room)) is not None
                         and _forwarding(r, plan.subscribers), "the load to join", 40.0)
            router = room_router(node, room)
            assert router is not None
            loop_calls: list[float] = []
            untime = _time_calls(router, loop_calls)
            await asyncio.sleep(plan.warm)
            cpu0, wall0, frames0 = time.process_time(), time.monotonic(), router.stats.frames_out
            await asyncio.sleep(plan.window)
            cpu1, wall1, frames1 = time.process_time(), time.monotonic(), router.stats.frames_out
            untime()
            estimation = await _estimation_cost(router, plan)
            load_result = await load.result(timeout=duration + 30.0)
    forwarding_cpu = cpu1 - cpu0
    wall = wall1 - wall0
    steps = estimation.pop("step_seconds")
    sends = estimation.pop("remb_send_seconds")
    step = sum(steps) / len(steps)
    remb = sum(sends) / len(sends) * estimation["video_producers"]
    per_call = step + remb
    per_participant_second = per_call / participants / config.bandwidth.update_interval
    forwarding = forwarding_cpu / wall / participants
    loop_step = sum(loop_calls) / len(loop_calls) if loop_calls else None
    loop_ratio = None if loop_step is None else (
        (loop_step + remb) / participants / config.bandwidth.update_interval / forwarding)
    return {
        "participants": participants,
        "forwarding_cpu_seconds": forwarding_cpu, "window_seconds": wall,
        "frames_out_per_second": (frames1 - frames0) / wall,
        "node_core_share": forwarding_cpu / wall,
        "forwarding_cpu_per_participant_second": forwarding,
        "step_cpu_mean": step, "step_cpu_p50": percentile(steps, 50),
        "step_cpu_p99": percentile(steps, 99), "steps_timed": len(steps),
        "remb_send_cpu_mean": remb / estimation["video_producers"],
        "loop_step_cpu_mean": loop_step, "loop_steps": len(loop_calls),
        "loop_estimation_over_forwarding": loop_ratio,
        "estimation_cpu_per_call": per_call,
        "estimation_cpu_per_call_per_participant": per_call / participants,
        "estimation_cpu_per_participant_second": per_participant_second,
        "estimation_over_forwarding": per_participant_second / forwarding,
        "update_interval": config.bandwidth.update_interval,
        "load": load_result,
        **estimation,
    }


# -- phase 2: trace ------------------------------------------------------------
def _frames(client: ParleyClient, kind: str) -> int:
    return sum(count for mid, count in client.frame_counts.items()
               if (remote := client.remote.get(mid)) is not None and remote.kind == kind)


def _video_state(member: Any) -> tuple[str, int | None]:
    """('layer', n) / ('rendition', None) / ('paused', None) of a member's video consumer."""
    consumer = next((c for c in member.consumers.values() if c.kind == "video"), None)
    if consumer is None:
        return "none", None
    if getattr(consumer, "rendition", None) is not None:
        return "rendition", None
    if consumer.bandwidth_paused:
        return "paused", None
    return "layer", int(consumer.layer)


def _record_inputs(link: Any, into: list[list[Any]], origin: float) -> None:
    """Keep what the poor link's estimator is fed each interval (a recorded sequence)."""
    estimator = link.estimator
    original = estimator.update

    def update(now: float, *, fraction_lost: float | None, rtt: float | None,
               remb: int | None, send_rate: float) -> float:
        into.append([round(now - origin, 3), fraction_lost, rtt, remb, round(send_rate)])
        result: float = original(now, fraction_lost=fraction_lost, rtt=rtt, remb=remb,
                                 send_rate=send_rate)
        return result

    estimator.update = update


async def trace(plan: Plan) -> dict[str, Any]:
    config = node_config()
    room = "bwtrace"
    async with local_node(config) as (url, node):
        def tok(identity: str, role: str) -> str:
            return mint_token(key=KEY, secret=SECRET, room=room, identity=identity, role=role)

        publisher = ParleyClient(url, tok("pub", "speaker"), decode=False)
        good = ParleyClient(url, tok("good", "listener"), decode=False)
        poor = RelayedClient(url, tok("poor", "listener"), decode=False)
        clients = [publisher, good, poor]
        try:
            for client in clients:
                await client.connect()
            await publisher.publish(EncodedTrack(encode_video(seconds=2.0, bitrate=900_000)),
                                    EncodedTrack(encode_audio(seconds=1.0)))
            await until(lambda: _frames(poor, "video") > 30 and _frames(good, "video") > 30,
                         "video at both subscribers", 20.0)
            if not poor.relays:
                raise BenchError("the constrained subscriber's media bypassed the relay")
            return await _sample(plan, node, room, poor, good, config.bandwidth)
        finally:
            for client in clients:
                await client.close()


async def _sample(plan: Plan, node: Node, room: str, poor: RelayedClient, good: ParleyClient,
                  bandwidth: BandwidthConfig) -> dict[str, Any]:
    router = room_router(node, room)
    member, good_member = room_member(node, room, "poor"), room_member(node, room, "good")
    if router is None or member is None or good_member is None or member.subscriber is None:
        raise BenchError("trace room is not set up")
    producer = next(p for p in router.producers.values() if p.kind == "video")
    link = member.subscriber.link
    origin = time.monotonic()
    inputs: list[list[Any]] = []
    _record_inputs(link, inputs, origin)
    phases = ((0.0, "clean", Impairment()), (plan.clean, "impaired", SQUEEZE),
              (plan.clean + plan.impaired, "lifted", Impairment()))
    end = plan.clean + plan.impaired + plan.lifted
    samples: list[dict[str, Any]] = []
    last_video, last_audio, last_t = _frames(poor, "video"), _frames(poor, "audio"), 0.0
    phase = -1
    while (t := time.monotonic() - origin) < end:
        while phase + 1 < len(phases) and t >= phases[phase + 1][0]:
            phase += 1
            poor.impair(phases[phase][2])
        video, audio = _frames(poor, "video"), _frames(poor, "audio")
        dt = max(t - last_t, 1e-3)
        state, layer = _video_state(member)
        samples.append({
            "t": round(t, 3), "phase": phases[phase][1],
            "remb_target": producer.link.target,
            "publisher_bitrate": round(producer.link.bitrate),
            "estimate": round(link.estimator.estimate), "share": round(link.share),
            "send_rate": round(link.send_rate), "loss": round(link.estimator.loss, 4),
            "rtt": link.rtt, "state": state, "layer": layer,
            "video_fps": round((video - last_video) / dt, 1) if samples else None,
            "audio_fps": round((audio - last_audio) / dt, 1) if samples else None,
            "good_estimate": round(good_member.subscriber.link.estimator.estimate),
        })
        last_video, last_audio, last_t = video, audio, t
        await asyncio.sleep(plan.sample_every)
    return {"samples": samples, "estimator_inputs": inputs,
            "phases": {name: start for start, name, _ in phases},
            "impairment": asdict(SQUEEZE), "config": asdict(bandwidth),
            "relay_dropped": sum(r.dropped for r in poor.relays.values())}


def _first(samples: list[dict[str, Any]], after: float,
           predicate: Callable[[dict[str, Any]], bool]) -> float | None:
    hit = next((s["t"] for s in samples if s["t"] >= after and predicate(s)), None)
    return None if hit is None else round(hit - after, 2)


def trace_figures(result: dict[str, Any], bandwidth: BandwidthConfig) -> dict[str, Any]:
    samples = result["samples"]
    squeeze, lift = result["phases"]["impaired"], result["phases"]["lifted"]
    settle = min(SETTLE, (lift - squeeze) / 2)
    during = [s for s in samples if squeeze + settle <= s["t"] < lift]
    after = [s for s in samples if s["t"] >= lift]
    floor = bandwidth.floor_bitrate

    def mean(rows: list[dict[str, Any]], key: str) -> float | None:
        values = [r[key] for r in rows if r[key] is not None]
        return sum(values) / len(values) if values else None

    return {
        "target_to_floor_s": _first(samples, squeeze, lambda s: (s["remb_target"] or 0) <= floor),
        "video_reduced_s": _first(samples, squeeze, lambda s: s["layer"] != 2),
        "video_off_s": _first(samples, squeeze, lambda s: s["state"] != "layer"),
        "estimate_below_pause_s": _first(samples, squeeze,
                                         lambda s: s["estimate"] < bandwidth.pause_below),
        "states_while_impaired": sorted({s["state"] for s in during}),
        "video_fps_while_impaired": mean(during, "video_fps"),
        "audio_fps_while_impaired": mean(during, "audio_fps"),
        "video_back_s": _first(samples, lift, lambda s: s["state"] in ("layer", "rendition")),
        "original_back_s": _first(samples, lift, lambda s: s["state"] == "layer"),
        "full_layer_s": _first(samples, lift, lambda s: s["layer"] == 2),
        "target_recovered_s": _first(samples, lift,
                                     lambda s: (s["remb_target"] or 0) > 2 * floor),
        "video_fps_last_5s": mean([s for s in after if s["t"] >= after[-1]["t"] - 5],
                                  "video_fps") if after else None,
        "final_estimate": samples[-1]["estimate"] if samples else None,
        "relay_dropped": result["relay_dropped"],
    }


def plot(result: dict[str, Any], path: Path, compared: dict[str, Any] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    t = [s["t"] for s in samples]
    squeeze, lift = result["phases"]["impaired"], result["phases"]["lifted"]
    fig = plt.figure(figsize=(10, 11.5 if compared else 8.5))
    grid = fig.add_gridspec(4 if compared else 3, 2,
                            height_ratios=(3, 1.3, 1.6, 2.4) if compared else (3, 1.3, 1.6))
    rates = fig.add_subplot(grid[0, :])
    layers = fig.add_subplot(grid[1, :], sharex=rates)
    fps = fig.add_subplot(grid[2, :], sharex=rates)
    if compared:
        bandwidth_compare.plot(compared, fig.add_subplot(grid[3, 0]),
                               fig.add_subplot(grid[3, 1]))
    kbps = [(s["remb_target"] or 0) / 1000 for s in samples]
    rates.step(t, kbps, where="post", label="REMB target to publisher", linewidth=2)
    rates.plot(t, [s["estimate"] / 1000 for s in samples],
               label="constrained subscriber: estimate")
    rates.plot(t, [s["send_rate"] / 1000 for s in samples], linestyle=":",
               label="constrained subscriber: sent to it")
    rates.plot(t, [s["good_estimate"] / 1000 for s in samples], alpha=0.6,
               label="clean subscriber: estimate")
    rates.plot(t, [s["publisher_bitrate"] / 1000 for s in samples], alpha=0.6,
               linestyle="--", label="publisher: received from it")
    rates.axhline(result["impairment"]["rate_bps"] / 1000, color="grey", linewidth=0.8,
                  linestyle="-.")
    rates.text(t[0], result["impairment"]["rate_bps"] / 1000, " relay limit while impaired",
               va="bottom", fontsize=8, color="grey")
    rates.set_ylabel("kbit/s")
    rates.legend(loc="upper right", fontsize=8)
    rates.set_title("Bandwidth adaptation: one subscriber's downlink squeezed to "
                    "300 kbit/s with 5 % loss")
    order = {"paused": -1, "rendition": -0.5}
    layers.step(t, [order.get(s["state"], s["layer"] if s["layer"] is not None else -1)
                    for s in samples], where="post", color="tab:red")
    layers.set_yticks([-1, -0.5, 0, 1, 2], ["paused", "rendition", "layer 0 (¼)",
                                            "layer 1 (½)", "layer 2 (full)"], fontsize=8)
    layers.set_ylim(-1.4, 2.4)
    layers.set_ylabel("video sent")
    fps.plot(t, [s["video_fps"] or 0 for s in samples], label="video frames/s received")
    fps.plot(t, [s["audio_fps"] or 0 for s in samples], label="audio frames/s received",
             alpha=0.7)
    fps.set_ylabel("frames/s")
    fps.set_xlabel("seconds")
    fps.legend(loc="upper right", fontsize=8)
    for axis in (rates, layers, fps):
        axis.axvspan(squeeze, lift, color="orange", alpha=0.12)
        axis.grid(alpha=0.3)
    rates.text((squeeze + lift) / 2, rates.get_ylim()[1] * 0.97, "impaired", ha="center",
               va="top", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# -- report --------------------------------------------------------------------
def _us(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e6:.0f} µs"


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def _rows(c: dict[str, Any], f: dict[str, Any]) -> list[Row]:
    n = c["participants"]
    return [
        Row(figure="forwarding CPU per participant-second", value=_us(
            c["forwarding_cpu_per_participant_second"]) + " per s",
            note=f"node {c['node_core_share']:.0%} of a core; 1 publisher + "
                 f"{n - 1} subscribers, {c['frames_out_per_second']:.0f} frames out/s"),
        Row(figure="estimation step (Router.update_bandwidth)",
            value=f"{_us(c['step_cpu_mean'])} / call",
            note=f"p50 {_us(c['step_cpu_p50'])}, p99 {_us(c['step_cpu_p99'])}, "
                 f"{c['steps_timed']} calls; the node's own loop: "
                 f"{_us(c['loop_step_cpu_mean'])} over {c['loop_steps']} calls"),
        Row(figure="REMB send to a publisher", value=f"{_us(c['remb_send_cpu_mean'])} / send",
            note=f"{c['video_producers']} video producer(s), one send per call"),
        Row(figure="estimation CPU per participant-second",
            value=_us(c["estimation_cpu_per_participant_second"]) + " per s",
            note=f"(step + REMB) / {n} participants, every {c['update_interval']:g} s"),
        Row(figure="estimation ÷ forwarding", value=f"{c['estimation_over_forwarding']:.2%}",
            note="CPU per participant-second; lower is better; with the node's own "
                 f"loop calls instead: {c['loop_estimation_over_forwarding'] or 0:.2%}"),
        Row(figure="REMB target at the floor after the squeeze", value=_s(f["target_to_floor_s"]),
            note="300 kbit/s + 5 % loss on one subscriber's downlink"),
        Row(figure="constrained subscriber's video below full rate / off after",
            value=f"{_s(f['video_reduced_s'])} / {_s(f['video_off_s'])}",
            note="states while impaired: " + ", ".join(f["states_while_impaired"])),
        Row(figure=f"received while impaired (after {SETTLE:g} s)",
            value=f"video {f['video_fps_while_impaired'] or 0:.1f} fps, "
                  f"audio {f['audio_fps_while_impaired'] or 0:.1f} fps",
            note="audio is 50 frames/s; the publisher's video is 30 frames/s"),
        Row(figure="video back after the lift", value=_s(f["video_back_s"]),
            note=f"forwarded original after {_s(f['original_back_s'])}, "
                 f"full frame rate (layer 2) after {_s(f['full_layer_s'])}"),
        Row(figure="REMB target above twice the floor after the lift",
            value=_s(f["target_recovered_s"]),
            note=f"video {f['video_fps_last_5s'] or 0:.1f} fps over the last 5 s"),
    ]


async def _measure(plan: Plan, compare_plan: bandwidth_compare.ComparePlan,
                   ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    costs, traced = await cost(plan), await trace(plan)
    compared = await bandwidth_compare.compare(compare_plan) if plan.compare else None
    return costs, traced, compared


def run(*, quick: bool = False) -> SuiteResult:
    plan = QUICK if quick else FULL
    compare_plan = bandwidth_compare.QUICK if quick else bandwidth_compare.FULL
    started = time.monotonic()
    costs, traced, compared = asyncio.run(_measure(plan, compare_plan))
    figures = trace_figures(traced, BandwidthConfig())
    rows = _rows(costs, figures)
    compare_figures = None
    if compared is not None:
        compare_figures = bandwidth_compare.figures(compared, compare_plan)
        rows += bandwidth_compare.rows(compare_figures)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    raw = RESULTS / f"bandwidth-trace-{stamp}.json"
    raw.write_text(json.dumps({"plan": asdict(plan), **traced, "compare": compared},
                              indent=1) + "\n")
    if plan.plot:
        plot(traced, PLOT, compared)
    return SuiteResult(name=NAME, rows=rows,
                       figures={"cost": costs, "trace": figures, "compare": compare_figures,
                                "trace_file": str(raw),
                                "plot": str(PLOT) if plan.plot else None},
                       seconds=time.monotonic() - started)

