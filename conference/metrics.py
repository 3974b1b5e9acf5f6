"""Conference metrics: rooms and participants on this node (no per-room labels)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from sfu.stats import LATENCY_BUCKETS, ForwardingStats


class ConferenceMetrics:
    """Registered on the node's own CollectorRegistry so several nodes can share a process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.rooms = Gauge("parley_conference_rooms", "Open rooms on this node", registry=registry)
        self.participants = Gauge(
            "parley_conference_participants", "Participants on this node", registry=registry
        )
        self.rooms_created = Counter(
            "parley_conference_rooms_created", "Rooms created", registry=registry
        )
        self.participants_left = Counter(
            "parley_conference_participants_left",
            "Participants that left, by reason",
            ["reason"],
            registry=registry,
        )


MediaSnapshot = Callable[[], tuple[ForwardingStats, dict[str, int]]]
"""Returns cumulative forwarding stats and current object counts of the node."""


class MediaCollector(Collector):
    """``parley_sfu_*``: read from the routers at scrape time (no per-room labels)."""

    def __init__(self, snapshot: MediaSnapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily
                                  | HistogramMetricFamily]:
        stats, counts = self._snapshot()
        yield CounterMetricFamily("parley_sfu_forwarded_frames", "Frames sent to subscribers",
                                  value=stats.frames_out)
        yield CounterMetricFamily("parley_sfu_forwarded_packets",
                                  "RTP packets sent to subscribers", value=stats.packets_out)
        yield CounterMetricFamily("parley_sfu_forwarded_bytes",
                                  "Payload bytes sent to subscribers", value=stats.bytes_out)
        buckets, total = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), stats.latency_counts,
                                strict=True):
            total += count
            buckets.append(("+Inf" if bound == float("inf") else str(bound), total))
        yield HistogramMetricFamily(
            "parley_sfu_forward_latency_seconds",
            "Frame's last packet in → frame handed to the packetizer",
            buckets=buckets, sum_value=stats.latency_sum)
        for name, value in counts.items():
            yield GaugeMetricFamily(f"parley_sfu_{name}", f"Live {name.replace('_', ' ')}",
                                    value=value)
