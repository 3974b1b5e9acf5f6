"""Conference metrics: rooms and participants on this node (no per-room labels)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
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
        self.subscriber_loss = Histogram(
            "parley_sfu_subscriber_loss_ratio", "Smoothed loss of subscriber links, per update",
            buckets=(0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0), registry=registry)
        self.subscriber_rtt = Histogram(
            "parley_sfu_subscriber_rtt_seconds", "Round-trip time of subscriber links",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6), registry=registry)
        self.subscriber_estimate = Histogram(
            "parley_sfu_subscriber_estimate_bps", "Estimated capacity of subscriber links",
            buckets=(50e3, 100e3, 200e3, 400e3, 800e3, 1.6e6, 3.2e6, 6.4e6), registry=registry)
        self.publisher_bitrate = Histogram(
            "parley_sfu_publisher_bitrate_bps", "Incoming bitrate of video publishers",
            buckets=(50e3, 100e3, 200e3, 400e3, 800e3, 1.6e6, 3.2e6), registry=registry)
        self.data_dropped = Counter(
            "parley_conference_data_dropped",
            "App data messages dropped because the sender was over its data rate",
            registry=registry,
        )
        self.resumed = Counter(
            "parley_conference_participants_resumed",
            "Participants taken back by a resume token after their socket dropped",
            registry=registry,
        )
        self.participants_left = Counter(
            "parley_conference_participants_left",
            "Participants that left, by reason",
            ["reason"],
            registry=registry,
        )
        self.media_failures = Counter(
            "parley_sfu_connection_failures",
            "Media connections that ended by themselves and were replaced, by target and reason",
            ["target", "reason"],
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
        yield CounterMetricFamily("parley_sfu_retransmitted_packets",
                                  "RTP packets sent again for subscribers' NACKs (fast path)",
                                  value=stats.packets_retransmitted)
        yield CounterMetricFamily("parley_sfu_segmented_sends",
                                  "sendmsg calls that carried several packets of a frame (UDP "
                                  "GSO; fast path)", value=stats.segmented_sends)
        yield CounterMetricFamily("parley_sfu_keyframe_requests_received",
                                  "PLI/FIR received from subscribers",
                                  value=stats.keyframe_requests)
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
