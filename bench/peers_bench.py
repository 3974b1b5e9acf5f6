"""The peers suite: Janus and Parley forwarding the same clip to the same subscribers.

Both servers run one after the other, each in its own turn, inside a private
network namespace (bench/netns.py: Janus gathers no ICE candidate on loopback,
so the namespace gets a veth pair with both ends inside; Parley runs there too,
for fairness). For each fan-out (1→40, 1→150) and each server:

- one publisher in this process loops the pre-encoded VP8 clip (client/media.py;
  no audio), logging when it hands each frame to its sender;
- the subscribers are light (client/light.py: ICE and DTLS-SRTP as usual, then
  packets, frames and gaps counted from the decrypted RTP headers) and spread
  over worker processes (client/pool.py), with the same code for both servers
  but the signalling: Janus's VideoRoom HTTP API (bench/janus_client.py) or
  Parley's WebSocket protocol;
- once every subscriber receives, after a warm-up, one window is measured: the
  server's CPU (``/proc``), the packets subscribers received, packets and bytes
  per frame received against what the publisher sent, the share of frames each
  subscriber got, and the added latency (publisher hands a frame to its sender →
  the subscriber has its last packet).

``--parley-config`` passes node config through (a JSON object merged over the
suite's), so two forwarding paths of Parley can be compared under the same load.
See docs/BENCHMARKS.md ("Peers: Janus and Parley").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection

from bench import netns
from bench.janus import INSTALL_HINT, JanusProcess, janus_binary
from bench.janus_client import create_room, publish
from bench.peers_report import rows
from bench.procs import BenchError, ServerProcess, cpu_seconds, free_port, parley_script
from bench.report import SuiteResult
from bench.sfu_bench import histogram_quantile, machine_busy_seconds
from client.client import ParleyClient
from client.hooks import redirect_keyframe_requests
from client.light import SendLog
from client.lightload import first_frame_delays, sent_now, window_figures
from client.media import EncodedClip, EncodedTrack, encode_video
from client.pool import Snapshot, SubscriberPool

NAME = "peers"
KEY = "peers-bench"
SECRET = "peers-bench-secret-0123456789abcdef"
ROOM = 1234
WARM = 2.0
"""Seconds between every subscriber receiving and the start of the measured window."""
OTHER_LOAD_RETRY = 0.4
"""A window during which other processes of the machine (not the server, not the load)
used more than this share of a core is measured again, once; both attempts are kept."""


@dataclass(frozen=True, kw_only=True)
class Plan:
    fanouts: tuple[int, ...] = (40, 150)
    window: float = 10.0
    """Measured seconds per server and fan-out."""
    subscribers_per_process: int = 40
    """Light subscribers per worker process."""
    join_timeout: float = 60.0
    bitrate: int = 1_000_000
    load_batch: bool = False
    """Run the load generator's worker processes under ``SCHED_BATCH`` (see
    :func:`yield_to_server`): for the node's own latency without the rig's preemption.
    Off by default: a server whose threads keep both cores busy (Janus at 1→150, 0.7 of
    a core over many threads) then starves the subscribers, whose reading delay counts
    end to end (Janus's p99 rose to 150 ms, from 52 and 108 ms in earlier quiet runs)."""


FULL = Plan()
QUICK = Plan(fanouts=(40,), window=4.0)
SMOKE = Plan(fanouts=(3,), window=2.0, join_timeout=20.0, load_batch=True)
"""For the suite's own test (which also checks ``--load-batch``'s path)."""

BASE_PARLEY_CONFIG: dict[str, Any] = {
    "sfu": {"ice_addresses": [netns.PEER_A]},
    "signaling": {"rate_limit_per_second": 1000, "rate_limit_burst": 1000,
                  "max_connections_per_ip": 0, "join_rate_per_ip": 0},
    "rooms": {"max_participants": 1000},
    "bandwidth": {"enabled": False},
}
"""ICE on the namespace's veth end, no per-IP or rate limits (every client is local),
no bandwidth adaptation (as in the sfu suite)."""


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base`` section by section (nested mappings merged)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


# -- one measured window ---------------------------------------------------------------
async def _wait_receiving(pool: SubscriberPool, timeout: float) -> Snapshot:
    deadline = time.monotonic() + timeout
    while True:
        snap = await pool.snapshot()
        if all(n > 0 for n in snap.per_stream) or time.monotonic() > deadline:
            return snap
        await asyncio.sleep(0.5)


NODE_LATENCY = "parley_sfu_forward_latency_seconds"
"""The node's own latency: a frame's last packet in → its last packet out to a subscriber."""
NODE_GC = "parley_node_gc_pause_seconds"
"""The node's garbage collections and their pauses."""
Counters = Callable[[], Awaitable[dict[str, float]]]
"""The server's own forwarding counters, where it has them (Parley's ``/metrics``)."""


async def _window(server_pid: int, pool: SubscriberPool, pc: RTCPeerConnection,
                  track: EncodedTrack, log: SendLog, plan: Plan,
                  joined_at: float, counters: Counters | None = None) -> dict[str, Any]:
    await _wait_receiving(pool, plan.join_timeout)
    batch = yield_to_server(server_pid) if plan.load_batch else 0
    await asyncio.sleep(WARM)
    node_a = await counters() if counters else {}
    cpu_a, subs_a = cpu_seconds(server_pid), pool.cpu_seconds()
    preempted_a = preemptions(server_pid)
    load_a = subs_a + cpu_seconds(os.getpid())
    busy_a = machine_busy_seconds()
    first, sent_a = await pool.snapshot(), await sent_now(pc, track)
    await asyncio.sleep(plan.window)
    last, sent_b = await pool.snapshot(), await sent_now(pc, track)
    cpu_b, subs_b = cpu_seconds(server_pid), pool.cpu_seconds()
    preempted_b = preemptions(server_pid)
    load_b = subs_b + cpu_seconds(os.getpid())
    busy_b = machine_busy_seconds()
    node_b = await counters() if counters else {}
    figures = window_figures(first, last, sent_a, sent_b, log,
                             frame_ticks=int(track.clip.clock / track.clip.fps))
    packets = figures["received_packets_per_s"] * figures["window_s"]
    delays = first_frame_delays(last, joined_at)
    figures.update({
        "subscribers_joined": pool.joined,
        "join_failures": pool.failed[:5],
        "server_cpu_share": (cpu_b - cpu_a) / figures["window_s"],
        "load_cpu_share": (load_b - load_a) / figures["window_s"],
        "other_cpu_share": max(0.0, (busy_b - busy_a) - (cpu_b - cpu_a) - (load_b - load_a))
        / figures["window_s"],
        "server_cpu_per_packet_s": (cpu_b - cpu_a) / packets if packets else None,
        "subscriber_cpu_per_packet_s": (subs_b - subs_a) / packets if packets else None,
        "first_frame_max_s": max(delays) if delays else None,
        "load_batch_threads": batch,
        "server_preemptions_per_s": (preempted_b - preempted_a) / figures["window_s"],
        **_node_figures(node_a, node_b, figures["window_s"]),
    })
    return figures


def histogram_share(a: dict[str, float], b: dict[str, float], name: str,
                    bound: float) -> float | None:
    """Share of the observations between two scrapes at or below ``bound`` (one of the
    histogram's bucket bounds)."""
    key, total = f'{name}_bucket{{le="{bound}"}}', f'{name}_count'
    if key not in b or total not in b or b[total] - a.get(total, 0.0) <= 0:
        return None
    return (b[key] - a.get(key, 0.0)) / (b[total] - a.get(total, 0.0))


def _node_figures(a: dict[str, float], b: dict[str, float], seconds: float) -> dict[str, Any]:
    """What the node says it sent, to tell frames cut in the node from packets lost after."""
    if not b:
        return {}
    frames = b["frames"] - a["frames"]
    full = (f'{NODE_GC}_count{{generation="2"}}', f'{NODE_GC}_sum{{generation="2"}}')
    return {"node_full_collections": b.get(full[0], 0.0) - a.get(full[0], 0.0),
            "node_full_collection_s": b.get(full[1], 0.0) - a.get(full[1], 0.0),
            "node_latency_p50_s": histogram_quantile(a, b, NODE_LATENCY, 0.5),
            "node_latency_p99_s": histogram_quantile(a, b, NODE_LATENCY, 0.99),
            "node_latency_within_15ms": histogram_share(a, b, NODE_LATENCY, 0.015),
            "node_frames_out_per_s": frames / seconds,
            "node_packets_per_frame": (b["packets"] - a["packets"]) / frames if frames else None,
            "node_bytes_per_frame": (b["bytes"] - a["bytes"]) / frames if frames else None}


async def _parley_counters(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(
            f"{url}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as resp:
        text = await resp.text()
    values = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name and not line.startswith("#"):
            values[name] = value
    counters = {name: float(value) for name, value in values.items()
                if name.startswith((NODE_LATENCY, NODE_GC))}
    counters.update({short: float(values.get(f"parley_sfu_forwarded_{short}_total", "nan"))
                     for short in ("frames", "packets", "bytes")})
    return counters


def _children(parent: int) -> list[int]:
    """Process ids whose parent is ``parent`` (``/proc/<pid>/stat`` field 4)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == parent:
                out.append(int(entry.name))
    return out


def preemptions(pid: int) -> int:
    """Involuntary context switches of every thread of ``pid`` so far: how often the
    scheduler took the CPU from it while it could still run."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith("nonvoluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


def yield_to_server(server_pid: int) -> int:
    """Put every thread of this process's children but the server under ``SCHED_BATCH``;
    returns how many threads were changed.

    The load generator shares the machine's cores with the server. Each datagram the
    server sends wakes a subscriber process, and a normal task woken on the server's
    core preempts it: one frame's fan-out, 150 sends in a row, was stretched by the very
    processes it feeds (wall time 1.6x its CPU time). Batch tasks never preempt on
    wake-up (they wait for the server's time slice to end), and lose nothing else: the
    load generator uses about half a core of two. The same for both servers.
    """
    changed = 0
    for pid in _children(os.getpid()):
        if pid == server_pid:
            continue
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    os.sched_setscheduler(int(task.name), os.SCHED_BATCH, os.sched_param(0))
                    changed += 1
    return changed


def _processes(plan: Plan, fanout: int) -> int:
    return max(1, -(-fanout // plan.subscribers_per_process))


# -- Janus -------------------------------------------------------------------------------
async def measure_janus(plan: Plan, clip: EncodedClip, fanout: int) -> dict[str, Any]:
    log = SendLog()
    async with JanusProcess(interface=netns.IFACE) as janus:
        await create_room(janus.api, ROOM)
        pc = RTCPeerConnection()
        track = EncodedTrack(clip)
        track.on_frame = log
        redirect_keyframe_requests(pc.addTransceiver(track, direction="sendonly").sender,
                                   track.restart)
        publisher = await publish(janus.api, ROOM, pc)
        try:
            joined_at = time.monotonic()
            async with SubscriberPool(
                    factory="bench.janus_client:janus_subscriber",
                    args={"url": janus.api, "room": ROOM, "feed": publisher.feed},
                    count=fanout, processes=_processes(plan, fanout),
                    join_timeout=plan.join_timeout) as pool:
                return await _window(janus.pid, pool, pc, track, log, plan, joined_at)
        finally:
            await publisher.close()


# -- Parley -------------------------------------------------------------------------------
def _mint(room: str, identity: str, role: str) -> str:
    from signaling.auth import mint_token

    return mint_token(key=KEY, secret=SECRET, room=room, identity=identity, role=role,
                      ttl=3600)


async def measure_parley(plan: Plan, clip: EncodedClip, fanout: int,
                         config: dict[str, Any]) -> dict[str, Any]:
    log = SendLog()
    room = f"peers-{fanout}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    with tempfile.TemporaryDirectory(prefix="parley-peers-") as tmp:
        path = Path(tmp) / "node.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        port = free_port()
        argv = [parley_script(), "serve", "--port", str(port), "--config", str(path),
                "--keys", f"{KEY}:{SECRET}", "--log-level", "warning"]
        async with ServerProcess("parley serve", argv, port=port, env=env) as node:
            url = f"http://127.0.0.1:{port}"
            track = EncodedTrack(clip)
            track.on_frame = log
            # no reconnection: a publisher that lost its socket fails the run, visibly
            publisher = ParleyClient(url, _mint(room, "pub", "speaker"), decode=False,
                                     reconnect=False)
            try:
                await publisher.connect()
                await publisher.publish(track)
                assert publisher.publisher is not None
                tokens = [_mint(room, f"sub-{n}", "listener") for n in range(fanout)]
                joined_at = time.monotonic()
                async with SubscriberPool(
                        factory="client.loadtest:parley_subscriber",
                        args={"url": url, "tokens": tokens}, count=fanout,
                        processes=_processes(plan, fanout),
                        join_timeout=plan.join_timeout, env=env) as pool:
                    return await _window(node.pid, pool, publisher.publisher, track, log,
                                         plan, joined_at, lambda: _parley_counters(url))
            finally:
                await publisher.leave()


# -- the run, inside the namespace ----------------------------------------------------------
PYTHON_LOOP = "parley-python"
"""Parley with its fast path's Python loop instead of the compiled one
(``sfu.native_loop: false``): the compiled loop's gain, measured in the same run."""
SERVERS = ("janus", PYTHON_LOOP, "parley")
"""Measured by default, in this order (``--servers`` picks some)."""


async def _measure(plan: Plan, parley_config: dict[str, Any],
                   servers: tuple[str, ...] = SERVERS) -> dict[str, Any]:
    clip = encode_video(seconds=2.0, bitrate=plan.bitrate)
    have_janus = janus_binary() is not None
    runs: list[dict[str, Any]] = []
    disturbed: list[dict[str, Any]] = []
    for fanout in plan.fanouts:
        for server in servers:
            for attempt in range(2):
                entry = await _attempt(plan, clip, server, fanout, parley_config, have_janus)
                print(f"  {server} 1→{fanout}: {_brief(entry)}", file=sys.stderr, flush=True)
                if attempt or entry.get("other_cpu_share", 0.0) <= OTHER_LOAD_RETRY:
                    break
                disturbed.append(entry)
            runs.append(entry)
    return {"plan": asdict(plan), "parley_config": parley_config, "janus_installed": have_janus,
            "clip_bitrate": sum(len(f) for f in clip.frames) * 8 / (len(clip.frames) / clip.fps),
            "runs": runs, "disturbed_attempts": disturbed}


async def _attempt(plan: Plan, clip: EncodedClip, server: str, fanout: int,
                   parley_config: dict[str, Any], have_janus: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"server": server, "fanout": fanout}
    if server == "janus" and not have_janus:
        entry["failed"] = INSTALL_HINT
        return entry
    try:
        if server == PYTHON_LOOP:
            parley_config = merge(parley_config, {"sfu": {"native_loop": False}})
        entry.update(await (measure_janus(plan, clip, fanout) if server == "janus"
                            else measure_parley(plan, clip, fanout, parley_config)))
    except (BenchError, OSError, RuntimeError, TimeoutError, ValueError) as exc:
        entry["failed"] = f"{type(exc).__name__}: {exc}"[:1500]
    return entry


def _brief(entry: dict[str, Any]) -> str:
    if "failed" in entry:
        return "failed: " + str(entry["failed"]).splitlines()[0]
    per = entry["server_cpu_per_packet_s"]
    return (f"{entry['received_packets_per_s']:,.0f} pkt/s, "
            f"{'n/a' if per is None else f'{per * 1e6:.1f} µs'} CPU per packet, "
            f"{entry['streams_verified']}/{entry['streams']} streams ≥ 99 %, latency p50 "
            f"{entry['latency_p50_s'] * 1e3:.1f} ms; other processes "
            f"{entry['other_cpu_share']:.0%} of a core")


def inner(argv: list[str]) -> int:
    """Runs inside the namespace: set it up, measure, print the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.peers_bench")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--parley-config", default="{}",
                        help="JSON object merged over the suite's node config")
    parser.add_argument("--fanouts", default="",
                        help="comma-separated fan-outs instead of the plan's (e.g. 250)")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help="comma-separated servers to measure, in order (e.g. parley: "
                             "one server's before/after in a short run; parley-python: "
                             "Parley with the fast path's Python per-packet loop)")
    parser.add_argument("--load-batch", action="store_true",
                        help="run the load generator under SCHED_BATCH, so that it does "
                             "not preempt the server (its own latency without the rig's)")
    parser.add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.in_namespace:
        command = [sys.executable, "-m", "bench.peers_bench", *argv, "--in-namespace"]
        return subprocess.run(netns.unshare_argv(command), check=False).returncode
    netns.set_up()
    plan = SMOKE if args.smoke else QUICK if args.quick else FULL
    if args.fanouts:
        plan = replace(plan, fanouts=tuple(int(v) for v in args.fanouts.split(",")))
    if args.load_batch:
        plan = replace(plan, load_batch=True)
    servers = tuple(args.servers.split(","))
    if not set(servers) <= set(SERVERS):
        parser.error(f"--servers: one or more of {', '.join(SERVERS)}")
    config = merge(BASE_PARLEY_CONFIG, json.loads(args.parley_config))
    figures = asyncio.run(_measure(plan, config, servers))
    print(json.dumps(figures))
    return 0


def run(*, quick: bool = False, parley_config: dict[str, Any] | None = None,
        fanouts: tuple[int, ...] | None = None) -> SuiteResult:
    """The suite as ``bench/run.py`` calls it: measured in a child in its own namespace."""
    started = time.monotonic()
    if not netns.available():
        raise BenchError("peers: cannot create a network namespace (`unshare --net "
                         "--map-root-user` failed: util-linux missing, or unprivileged user "
                         "namespaces disabled, kernel.unprivileged_userns_clone=0)")
    if janus_binary() is None:
        print(f"peers: {INSTALL_HINT}; only Parley is measured", file=sys.stderr, flush=True)
    argv = [sys.executable, "-m", "bench.peers_bench", "--in-namespace",
            "--parley-config", json.dumps(parley_config or {})] + (["--quick"] if quick else [])
    if fanouts:
        argv += ["--fanouts", ",".join(str(n) for n in fanouts)]
    done = subprocess.run(netns.unshare_argv(argv), stdout=subprocess.PIPE, text=True,
                          check=False, timeout=1800)
    if done.returncode != 0 or not done.stdout.strip():
        raise BenchError(f"peers suite failed (status {done.returncode})")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return SuiteResult(name=NAME, rows=rows(figures), figures=figures,
                       seconds=time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(inner(sys.argv[1:]))
