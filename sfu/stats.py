"""Forwarding counters and object counts of one Router, read by the conference layer's
metrics collector."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01,
                   0.0125, 0.015, 0.0175, 0.02, 0.025, 0.03, 0.04, 0.05, 0.1, 0.25)
"""Upper bounds (seconds) of the in → out latency histogram: fine from 10 to 40 ms, where
a fan-out to 150 subscribers puts its p99 (issue 12's target is 15 ms)."""


@dataclass(frozen=True, kw_only=True)
class RouterCounts:
    """What one Router holds at a moment (``Router.counts()``), for gauges."""

    producers: int
    consumers: int
    """Consumers of the router's producers."""
    peer_connections: int
    """Transports: one peer connection each."""


@dataclass
class ForwardingStats:
    """Cumulative; shared by every sender of a router. Plain ints: updated on the loop."""

    frames_out: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    packets_retransmitted: int = 0
    """Packets sent again for a subscriber's NACK (fast path; RTX or as they were)."""
    keyframe_requests: int = 0
    """PLI/FIR received from subscribers (each is passed on to its producer, coalesced)."""
    segmented_sends: int = 0
    """``sendmsg`` calls that carried several of a frame's packets (UDP GSO; fast path)."""
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0

    def observe_latency(self, seconds: float) -> None:
        """Frame's last packet in → frame handed to the packetizer."""
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def add(self, other: ForwardingStats) -> None:
        self.frames_out += other.frames_out
        self.packets_out += other.packets_out
        self.bytes_out += other.bytes_out
        self.keyframe_requests += other.keyframe_requests
        self.packets_retransmitted += other.packets_retransmitted
        self.segmented_sends += other.segmented_sends
        for i, count in enumerate(other.latency_counts):
            self.latency_counts[i] += count
        self.latency_sum += other.latency_sum
