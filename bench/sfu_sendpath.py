"""Send-path CPU per packet: aiortc's sender against the fast path, in one process.

The node-level figures of the fast-path phase include what the node does for
the load generator (its RTCP, NACKs, consent checks) and move with whatever
else the 2-core machine runs. This measures the send path alone, both paths
in one process, one after the other: an SFU-side peer connection with S
sending m-lines (S subscribers' streams; one connection instead of S, the
per-packet work is the same), connected to a plain aiortc peer over
loopback; once connected, the selected ICE pair's remote address is pointed
at a UDP socket nobody reads, so the kernel still delivers every datagram on
loopback but no receiver in this process spends CPU on it. Frames of the
benchmark clip are pushed into each m-line's SlotTrack at 30 fps, as a
producer's fan-out does. Figure: process CPU (all threads) ÷ RTP packets
sent, and the added latency (push → last packet sent, fast path; push → taken
by aiortc's sender, aiortc's path).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpSender

from bench.report import Row
from client.media import EncodedClip
from sfu.consumer import SlotTrack
from sfu.encoded import EncodedFrame
from sfu.fastpath import Outbound
from sfu.hooks import install_packer, restrict_host_addresses
from sfu.stats import LATENCY_BUCKETS, ForwardingStats


def _quantile(counts: list[int], q: float) -> float | None:
    total = sum(counts)
    if not total:
        return None
    rank, seen, lower = q * total, 0, 0.0
    for bound, count in zip((*LATENCY_BUCKETS, LATENCY_BUCKETS[-1]), counts, strict=True):
        if seen + count >= rank:
            return lower + (bound - lower) * ((rank - seen) / count if count else 1.0)
        seen, lower = seen + count, bound
    return lower


async def _connect(fast: bool, streams: int, stats: ForwardingStats
                   ) -> tuple[RTCPeerConnection, RTCPeerConnection, list[SlotTrack]]:
    sfu, client = RTCPeerConnection(), RTCPeerConnection()
    caps = [c for c in RTCRtpSender.getCapabilities("video").codecs
            if c.mimeType.split("/")[1].lower() in ("vp8", "rtx")]
    slots = []
    for _ in range(streams):
        track = SlotTrack("video", 128, stats)
        transceiver = sfu.addTransceiver(track, direction="sendonly")
        transceiver.setCodecPreferences(caps)
        if fast:
            track.outbound = Outbound(transceiver.sender, "video", stats,
                                      on_keyframe_request=lambda: None)
        else:
            install_packer(transceiver.sender, "video", stats)
        slots.append(track)
    await sfu.setLocalDescription(await sfu.createOffer())
    await client.setRemoteDescription(sfu.localDescription)
    await client.setLocalDescription(await client.createAnswer())
    await sfu.setRemoteDescription(client.localDescription)
    for _ in range(400):  # 20 s
        if sfu.connectionState == "connected" and all(
                s.outbound is None or s.outbound.params is not None for s in slots):
            return sfu, client, slots
        await asyncio.sleep(0.05)
    raise TimeoutError("the send-path peers did not connect")


def _divert(sfu: RTCPeerConnection, sink: tuple[str, int]) -> None:
    """Point the selected pair at ``sink``: both paths send there from now on."""
    dtls = sfu.getTransceivers()[0].sender.transport
    for pair in dtls.transport._connection._nominated.values():
        pair.remote_candidate.host, pair.remote_candidate.port = sink


async def _drive(slots: list[SlotTrack], clip: EncodedClip, seconds: float, start: int) -> int:
    """Push clip frames to every slot in real time; returns the next frame index."""
    interval = 1.0 / clip.fps
    frames = int(seconds * clip.fps)
    began = time.monotonic()
    for n in range(frames):
        i = start + n
        frame = EncodedFrame(data=clip.frames[i % len(clip.frames)], timestamp=i * 3000,
                             keyframe=i % len(clip.frames) == 0, discontinuity=False,
                             received_at=time.perf_counter())
        for slot in slots:
            slot.push(frame)
        wait = began + (n + 1) * interval - time.monotonic()
        await asyncio.sleep(max(0.0, wait))
    return start + frames


async def _burst(slots: list[SlotTrack], clip: EncodedClip, frames: int, start: int,
                 stats: ForwardingStats) -> None:
    """Push ``frames`` clip frames as fast as the path takes them, 30 at a time (aiortc's
    senders drain their queues in between): the intrinsic cost, without pacing."""
    for first in range(start, start + frames, 30):
        target = stats.frames_out + 30 * len(slots)
        for i in range(first, first + 30):
            frame = EncodedFrame(data=clip.frames[i % len(clip.frames)], timestamp=i * 3000,
                                 keyframe=i % len(clip.frames) == 0, discontinuity=False)
            for slot in slots:
                slot.push(frame)
        for _ in range(1_000_000):  # aiortc's senders take a frame per loop turn
            if stats.frames_out >= target:
                break
            await asyncio.sleep(0)


async def measure_path(fast: bool, streams: int, clip: EncodedClip,
                       seconds: float) -> dict[str, Any]:
    stats = ForwardingStats()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sfu, client, slots = await _connect(fast, streams, stats)
    try:
        _divert(sfu, sink.getsockname())
        nxt = await _drive(slots, clip, 1.0, 0)  # warm-up
        await asyncio.sleep(0.2)
        cpu, packets, frames = time.process_time(), stats.packets_out, stats.frames_out
        latency = list(stats.latency_counts)
        await _drive(slots, clip, seconds, nxt)
        await asyncio.sleep(0.2)  # aiortc's senders finish the last frame
        cpu = time.process_time() - cpu
        packets, frames = stats.packets_out - packets, stats.frames_out - frames
        counts = [b - a for a, b in zip(latency, stats.latency_counts, strict=True)]
        burst_cpu, burst_packets = time.process_time(), stats.packets_out
        await _burst(slots, clip, 60, nxt + int(seconds * clip.fps), stats)
        burst_cpu = time.process_time() - burst_cpu
        burst_packets = stats.packets_out - burst_packets
    finally:
        with contextlib.suppress(Exception):
            await client.close()
        with contextlib.suppress(Exception):
            await sfu.close()
        sink.close()
    return {"fast_path": fast, "streams": streams, "seconds": seconds, "cpu_s": cpu,
            "packets": packets, "frames": frames,
            "frames_expected": int(seconds * clip.fps) * streams,
            "cpu_per_packet_s": cpu / packets if packets else None,
            "burst_cpu_per_packet_s": burst_cpu / burst_packets if burst_packets else None,
            "latency_p50_s": _quantile(counts, 0.5), "latency_p99_s": _quantile(counts, 0.99)}


async def send_path_phase(fan_outs: tuple[int, ...], clip: EncodedClip,
                          seconds: float) -> list[dict[str, Any]]:
    """Per fan-out: aiortc's sender, then the fast path, in this process."""
    restrict_host_addresses(("127.0.0.1",))
    try:
        results = []
        for streams in fan_outs:
            old = await measure_path(False, streams, clip, seconds)
            new = await measure_path(True, streams, clip, seconds)
            results.append({"streams": streams, "aiortc sender": old, "fast path": new,
                            "ratio": (old["cpu_per_packet_s"] / new["cpu_per_packet_s"]
                                      if old["cpu_per_packet_s"] and new["cpu_per_packet_s"]
                                      else None)})
        return results
    finally:
        restrict_host_addresses(())


def _us(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e6:.1f} µs"


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.2f} ms"


def send_path_rows(results: list[dict[str, Any]]) -> list[Row]:
    rows = []
    for entry in results:
        old, new = entry["aiortc sender"], entry["fast path"]
        burst = (old["burst_cpu_per_packet_s"] / new["burst_cpu_per_packet_s"]
                 if old["burst_cpu_per_packet_s"] and new["burst_cpu_per_packet_s"] else None)
        ratio = entry["ratio"]
        rows.append(Row(
            figure=f"send path, {entry['streams']} streams: CPU per packet, aiortc sender / "
                   "fast path",
            value=f"{_us(old['cpu_per_packet_s'])} / {_us(new['cpu_per_packet_s'])}",
            note=(f"{'n/a' if ratio is None else f'{ratio:.2f}x'} at 30 fps; in bursts "
                  f"{_us(old['burst_cpu_per_packet_s'])} / {_us(new['burst_cpu_per_packet_s'])}"
                  f" ({'n/a' if burst is None else f'{burst:.2f}x'}); added latency p50/p99 "
                  f"{_ms(old['latency_p50_s'])}/{_ms(old['latency_p99_s'])} vs "
                  f"{_ms(new['latency_p50_s'])}/{_ms(new['latency_p99_s'])}; one process, "
                  "no receiver (bench/sfu_sendpath.py)")))
    return rows
