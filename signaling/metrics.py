"""Signalling metrics (``parley_signaling_*``); labels are message types and codes only."""

from __future__ import annotations

import asyncio
import bisect
import collections
import gc
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


class SignalingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.connections = Gauge(
            "parley_signaling_connections", "Open signalling WebSockets", registry=registry
        )
        self.messages_in = Counter(
            "parley_signaling_messages_received",
            "Client messages received, by type (invalid ones as 'invalid')",
            ["type"],
            registry=registry,
        )
        self.messages_out = Counter(
            "parley_signaling_messages_sent", "Server messages sent, by type", ["type"],
            registry=registry,
        )
        self.errors = Counter(
            "parley_signaling_errors", "Error messages sent, by code", ["code"], registry=registry
        )
        self.auth_failures = Counter(
            "parley_signaling_auth_failures", "Refused join tokens, by reason", ["reason"],
            registry=registry,
        )
        self.send_timeouts = Counter(
            "parley_signaling_send_timeouts",
            "Client sockets aborted because a write passed signaling.send_timeout",
            registry=registry,
        )
        self.refused_connections = Counter(
            "parley_signaling_refused_connections",
            "Sockets and joins refused to protect the node, by reason: per_ip_connections, "
            "header_timeout, join_rate, malformed_http",
            ["reason"],
            registry=registry,
        )
        self.join_latency = Histogram(
            "parley_signaling_join_latency_seconds",
            "Join message received → joined reply queued",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )

        self._sent: dict[str, Any] = {}
        self._received: dict[str, Any] = {}

    def received(self, mtype: str) -> None:
        """``mtype`` is a validated message type, or ``invalid``."""
        child = self._received.get(mtype)
        if child is None:
            child = self._received[mtype] = self.messages_in.labels(type=mtype)
        child.inc()

    def refused(self, reason: str) -> None:
        """``reason`` is one of a fixed few (see ``refused_connections``)."""
        self.refused_connections.labels(reason=reason).inc()

    def error(self, code: str) -> None:
        self.errors.labels(code=code).inc()

    def sent(self, mtype: str) -> None:
        """Counted per message on the hot path: label children are looked up once."""
        child = self._sent.get(mtype)
        if child is None:
            child = self._sent[mtype] = self.messages_out.labels(type=mtype)
        child.inc()


class RuntimeCollector(Collector):
    """``parley_node_*``: what a long-running node could leak, read at scrape time.

    Together with the standard ``process_*`` metrics (RSS, open fds, CPU seconds) that
    ``register_runtime_metrics`` adds, these show a node that drifts over hours.
    """

    def describe(self) -> Iterator[Metric]:
        return self._families(tasks=[], threads=0)

    def collect(self) -> Iterator[Metric]:
        try:
            tasks = list(asyncio.all_tasks())
        except RuntimeError:  # scraped outside the node's loop
            tasks = []
        return self._families(tasks=tasks, threads=threading.active_count())

    @staticmethod
    def _families(*, tasks: list[asyncio.Task[Any]],
                  threads: int) -> Iterator[Metric]:
        yield GaugeMetricFamily("parley_node_asyncio_tasks",
                                "asyncio tasks not yet done on the node's event loop",
                                value=len(tasks))
        by_coroutine = GaugeMetricFamily(
            "parley_node_asyncio_tasks_by_coroutine",
            "The same tasks by the qualified name of the coroutine each runs "
            "(a bounded set: names come from the code, not from clients)",
            labels=["coroutine"])
        for name, count in sorted(collections.Counter(coroutine_name(t) for t in tasks).items()):
            by_coroutine.add_metric([name], count)
        yield by_coroutine
        yield GaugeMetricFamily("parley_node_threads", "Live threads of the node process",
                                value=threads)
        yield GcPauses.family()
        yield GaugeMetricFamily("parley_node_gc_frozen_objects",
                                "Objects the node set aside from garbage collection once it "
                                "listened (gc.freeze)", value=gc.get_freeze_count())


def coroutine_name(task: asyncio.Task[Any]) -> str:
    """``module.qualname`` of the coroutine a task runs (its type's name if it has none)."""
    coro = task.get_coro()
    module = getattr(coro, "cr_frame", None)
    where = module.f_globals.get("__name__", "") if module is not None else ""
    name = getattr(coro, "__qualname__", type(coro).__name__)
    return f"{where}.{name}" if where else name


GC_PAUSE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class GcPauses:
    """How long each garbage collection stopped the process, by generation (process-wide:
    one ``gc.callbacks`` entry, installed by the first node's metrics)."""

    counts = [[0] * (len(GC_PAUSE_BUCKETS) + 1) for _ in range(3)]
    sums = [0.0, 0.0, 0.0]
    _started = 0.0
    installed = False

    @classmethod
    def install(cls) -> None:
        if not cls.installed:
            cls.installed = True
            gc.callbacks.append(cls._callback)

    @classmethod
    def _callback(cls, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            cls._started = time.perf_counter()
            return
        pause = time.perf_counter() - cls._started
        generation = min(info.get("generation", 2), 2)
        cls.counts[generation][bisect.bisect_left(GC_PAUSE_BUCKETS, pause)] += 1
        cls.sums[generation] += pause

    @classmethod
    def family(cls) -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            "parley_node_gc_pause_seconds",
            "Garbage collections of the node process and how long each paused it, by "
            "generation (2: full collections)", labels=["generation"])
        for generation, counts in enumerate(cls.counts):
            cumulative, buckets = 0, []
            for bound, count in zip((*GC_PAUSE_BUCKETS, math.inf), counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == math.inf else str(bound), cumulative))
            family.add_metric([str(generation)], buckets, sum_value=cls.sums[generation])
        return family


def register_runtime_metrics(registry: CollectorRegistry) -> None:
    """The node's asyncio tasks and threads, its garbage collections' pauses, and the
    process's RSS, open fds and CPU time (``process_*``, read from ``/proc`` where there
    is one)."""
    GcPauses.install()
    registry.register(RuntimeCollector())
    ProcessCollector(registry=registry)


RELAY_DIRECTIONS = ("in", "out")
RELAY_SIDES = ("edge", "owner")
RELAY_LOSSES = ("node_lost", "relay_lost")


class RelayMetrics:
    """``parley_relay_*``: relayed sessions between nodes (clustered nodes only)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "parley_relay_messages",
            "Client and server messages carried over the bus for relayed sessions: out = sent "
            "by this node, in = received",
            ["direction"], registry=registry)
        self.latency = Histogram(
            "parley_relay_latency_seconds",
            "A relayed message's publish on one node → its handling on the other (wall clocks "
            "of two machines: keep them in sync)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=registry)
        self.join_latency = Histogram(
            "parley_relay_join_latency_seconds",
            "A join relayed to the room's node: open sent → session opened there",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry)
        self.sessions = Gauge(
            "parley_relay_sessions",
            "Relayed sessions: edge = the socket is here, owner = the room is here",
            ["side"], registry=registry)
        self.lost = Counter(
            "parley_relay_lost",
            "Relayed sessions ended by a lost peer: node_lost (silent past "
            "cluster.relay_timeout), relay_lost (frames missing or the peer forgot the session)",
            ["reason"], registry=registry)
        self.requests = Counter(
            "parley_relay_requests",
            "Requests sent to other nodes (admin forwarding), by outcome: ok, failed",
            ["outcome"], registry=registry)
        self.relayed_in = self.messages.labels(direction="in")
        self.relayed_out = self.messages.labels(direction="out")
        for side in RELAY_SIDES:
            self.sessions.labels(side=side)
        for reason in RELAY_LOSSES:
            self.lost.labels(reason=reason)
        for outcome in ("ok", "failed"):
            self.requests.labels(outcome=outcome)
