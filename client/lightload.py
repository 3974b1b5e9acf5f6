"""What a measured window of light subscribers saw, against what the publisher sent.

Shared by ``parley loadtest --light`` (client/loadtest.py) and benchmarks that
drive other servers with the same subscribers (bench/peers_bench.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection

from client.light import SendLog, diff_totals
from client.media import EncodedTrack
from client.pool import Snapshot

DELIVERED_BAR = 0.99
"""A stream counts as verified when it got this share of the frames sent."""


@dataclass(frozen=True, kw_only=True)
class Sent:
    """The publisher's video sender at one moment."""

    at: float
    frames: int
    packets: int
    bytes: int
    """Payload bytes, as aiortc counts them for sender reports."""


async def sent_now(pc: RTCPeerConnection, track: EncodedTrack) -> Sent:
    """Frames handed to ``track``'s sender, and the packets and bytes it sent."""
    senders = [t.sender for t in pc.getTransceivers()
               if track in (t.sender.track, getattr(t.sender.track, "source", None))]
    if not senders:
        raise RuntimeError(f"the publisher's connection no longer sends this track "
                           f"(connection {pc.connectionState})")
    sender = senders[0]
    packets = octets = 0
    for stats in (await sender.getStats()).values():
        if getattr(stats, "type", "") == "outbound-rtp":
            packets += int(stats.packetsSent)
            octets += int(stats.bytesSent)
    return Sent(at=time.monotonic(), frames=track.frames_sent, packets=packets, bytes=octets)


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _per(a: float, b: float) -> float | None:
    return a / b if b else None


def window_figures(first: Snapshot, last: Snapshot, sent_a: Sent, sent_b: Sent,
                   log: SendLog, *, frame_ticks: int = 3000) -> dict[str, Any]:
    """Rates, delivery, packets and bytes per frame (received vs sent), latency.

    A subscriber's share of the frames is its complete frames over the frames its
    streams' RTP timestamps advanced by (``frame_ticks`` each: 90 kHz at 30 fps),
    so the window's edges need not line up with the publisher's. ``sent_*`` sum
    every publisher. With several publishers of one clip, a frame is paired with
    the latest send of the same clip frame by any of them, so latency is only
    exact with one publisher."""
    seconds = sent_b.at - sent_a.at
    video = diff_totals(last.totals, first.totals).get("video", {})
    frames_sent = sent_b.frames - sent_a.frames
    streams = len(last.per_stream)
    got = [b - a for a, b in zip(first.per_stream, last.per_stream, strict=True)]
    spans = [(b - a) / frame_ticks for a, b in zip(first.ticks, last.ticks, strict=True)]
    shares = [n / span if span else 0.0 for n, span in zip(got, spans, strict=True)]
    latency = log.latencies(last.samples)
    packets, frames = video.get("packets", 0), video.get("frames", 0)
    return {
        "window_s": seconds,
        "streams": streams,
        "streams_receiving": sum(1 for n in got if n > 0),
        "streams_verified": sum(1 for s in shares if s >= DELIVERED_BAR),
        "delivered_min": min(shares) if shares else None,
        "delivered_mean": sum(shares) / len(shares) if shares else None,
        "received_packets_per_s": packets / seconds,
        "received_mbit_per_s": video.get("bytes", 0) * 8 / seconds / 1e6,
        "received_frames_per_s": frames / seconds,
        "complete_frames_per_s": video.get("complete", 0) / seconds,
        "lost_packets": video.get("lost", 0),
        "sent_frames": frames_sent,
        "sent_packets_per_frame": _per(sent_b.packets - sent_a.packets, frames_sent),
        "sent_bytes_per_frame": _per(sent_b.bytes - sent_a.bytes, frames_sent),
        "received_packets_per_frame": _per(packets, frames),
        "received_bytes_per_frame": _per(video.get("bytes", 0), frames),
        "latency_samples": len(latency),
        "latency_unpaired": len(last.samples) - len(latency),
        "latency_p50_s": _quantile(latency, 0.5),
        "latency_p99_s": _quantile(latency, 0.99),
        "latency_max_s": max(latency) if latency else None,
    }


def first_frame_delays(snapshot: Snapshot, joined_at: float) -> list[float]:
    """Seconds from the subscribers' joining to each one's first complete video frame."""
    return [t - joined_at for t in snapshot.first if t is not None]
