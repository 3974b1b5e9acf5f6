"""An hour without drift: a busy meeting on one node, sampled over time.

The node runs as ``parley serve`` in its own process; the meeting's clients
(bench/soak_scenario.py: 4 publishers, 20 subscribers, a moderator and a guest,
all aiortc, plus signalling-only sockets) run in this one. One action every
``interval`` seconds (joins, leaves, mutes, stage changes, renegotiations,
signalling churn) for ``minutes``; then everyone leaves and the node is watched
until its counts are back where they were before the first join.

Every ``sample_every`` seconds the node's ``/metrics`` gives RSS, open fds,
asyncio tasks, threads, peer connections, producers, consumers, forwarded
packets and CPU seconds; the steady subscribers' frame counters give the
received frame rate. The series goes to ``bench/results/soak-<time>.json`` and
``.csv`` and a plot to ``.png`` beside them.

The bar: RSS slope (a least-squares line over the samples after ``warmup``)
under 1 MiB per 10 minutes; tasks, fds and peer connections back to their
baseline once the room is empty; no frame-rate decay (the last minute's rate
against the first minute's after the warm-up, as frames per second and as the share of
the frames sent that a steady subscriber received, which a machine busy with other
work lowers less than the rate).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.procs import ServerProcess, cpu_seconds, free_port, parley_script
from bench.report import Row, SuiteResult
from bench.soak_scenario import KEY, SECRET, Meeting
from client.media import encode_video

NAME = "soak"
RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = """sfu:
  ice_addresses: ["127.0.0.1"]
rooms:
  empty_timeout: 2
signaling:
  rate_limit_per_second: 1000
  rate_limit_burst: 1000
  max_connections_per_ip: 0
  join_rate_per_ip: 0
"""
COUNTS = ("tasks", "fds", "pcs", "producers", "consumers", "connections", "participants",
          "rooms")
"""Sampled counts that must come back to their baseline once the room is empty."""
BACK_TO_BASELINE = ("tasks", "fds", "pcs")
"""The counts the bar (and the CI test) hold to their baseline exactly."""
_METRICS = {
    "process_resident_memory_bytes": "rss",
    "process_open_fds": "fds",
    "process_cpu_seconds_total": "cpu",
    "parley_node_asyncio_tasks": "tasks",
    "parley_node_threads": "threads",
    "parley_sfu_peer_connections": "pcs",
    "parley_sfu_producers": "producers",
    "parley_sfu_consumers": "consumers",
    "parley_sfu_forwarded_packets_total": "packets",
    "parley_signaling_connections": "connections",
    "parley_conference_participants": "participants",
    "parley_conference_rooms": "rooms",
}


@dataclass(frozen=True, kw_only=True)
class SoakPlan:
    minutes: float = 60.0
    """How long the meeting runs (actions and samples), warm-up included."""
    publishers: int = 4
    subscribers: int = 20
    steady: int = 10
    """Subscribers that never churn; the frame rate is measured on them."""
    interval: float = 2.0
    """Seconds between two actions."""
    sample_every: float = 5.0
    warmup: float = 120.0
    """Seconds left out of the RSS fit and before the first frame-rate window."""
    window: float = 60.0
    """The frame-rate windows: the first after the warm-up, and the last."""
    settle: float = 60.0
    """Seconds the emptied node may take to get its counts back to baseline."""
    width: int = 160
    height: int = 120
    fps: int = 15
    bitrate: int = 100_000


async def scrape(http: aiohttp.ClientSession, port: int,
                 tasks: dict[str, float] | None = None) -> dict[str, float]:
    """The node's figures the soak follows, by short name; ``tasks``, when given, is filled
    with the node's asyncio tasks by coroutine."""
    async with http.get(f"http://127.0.0.1:{port}/metrics",
                        timeout=aiohttp.ClientTimeout(total=10)) as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = _METRICS.get(sample.name)
            if key is not None and not sample.labels:
                out[key] = sample.value
            elif sample.name == "parley_node_asyncio_tasks_by_coroutine" and tasks is not None:
                tasks[sample.labels["coroutine"]] = sample.value
    return out


def tasks_left(baseline: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Coroutines with more tasks after than at the baseline, and how many more."""
    return {name: n - baseline.get(name, 0.0) for name, n in sorted(after.items())
            if n > baseline.get(name, 0.0)}


def _server(config_path: str, heap: Path | None) -> ServerProcess:
    """``parley serve``; with ``heap``, under bench/soak_heap.py (the same node, which
    writes a heap report into ``heap`` on each SIGUSR1)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    flags = ["--port", str(port), "--keys", f"{KEY}:{SECRET}", "--config", config_path,
             "--log-level", "warning"]
    if heap is None:
        return ServerProcess("parley serve", [parley_script(), "serve", *flags], port=port,
                             env=env)
    argv = [sys.executable, "-m", "bench.soak_heap", str(heap), *flags]
    return ServerProcess("parley serve", argv, port=port, env=env)


@contextlib.asynccontextmanager
async def _node(heap: Path | None) -> AsyncIterator[ServerProcess]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config:
        config.write(CONFIG)
    try:
        async with _server(config.name, heap) as server:
            yield server
    finally:
        os.unlink(config.name)


async def heap_report(server: ServerProcess, heap: Path | None, timeout: float = 120.0) -> None:
    """Ask the node (under bench/soak_heap.py) for its next heap report and wait for it."""
    if heap is None:
        return
    count = len(await asyncio.to_thread(lambda: list(heap.glob("heap-*.txt"))))
    os.kill(server.pid, signal.SIGUSR1)
    path = heap / f"heap-{count}.txt"
    for _ in range(int(timeout / 0.5)):  # the node writes it whole (a rename)
        if await asyncio.to_thread(path.exists):
            return
        await asyncio.sleep(0.5)


def rss_split(pid: int) -> dict[str, float]:
    """The node's RSS, MiB, split: anonymous (heaps: what the node allocates) and
    file-backed (its libraries' pages, read in as code paths are first used)."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                out[f"{key[3:].lower()}_mib"] = int(value.split()[0]) / 1024
    return out


class Sampler:
    """Samples the node and the meeting every ``every`` seconds into ``rows``."""

    def __init__(self, http: aiohttp.ClientSession, server: ServerProcess, every: float,
                 origin: float) -> None:
        self._http = http
        self._server = server
        self._every = every
        self._origin = origin
        self.rows: list[dict[str, float]] = []
        self.tasks: dict[str, float] = {}
        """The node's tasks by coroutine at the last sample."""
        self.meeting: Meeting | None = None
        self.phase = "idle"
        self.progress = False
        """Print a line on stderr every minute (the bench; the test stays quiet)."""

    async def sample(self) -> dict[str, float]:
        self.tasks = {}
        row = await scrape(self._http, self._server.port, self.tasks)
        row["t"] = time.monotonic() - self._origin
        row["rss_mib"] = row.pop("rss", 0.0) / 2**20
        row.update(rss_split(self._server.pid))
        row["client_cpu"] = cpu_seconds(os.getpid())
        row["frames"] = float(self.meeting.steady_frames()) if self.meeting else 0.0
        row["sent"] = float(self.meeting.sent_frames()) if self.meeting else 0.0
        row["active"] = 1.0 if self.phase == "meeting" else 0.0
        if self.rows:
            last = self.rows[-1]
            dt = row["t"] - last["t"]
            cpu = row["cpu"] - last["cpu"]
            packets = row["packets"] - last["packets"]
            row["packets_per_cpu_s"] = packets / cpu if cpu > 0 else 0.0
            steady = self.meeting.steady if self.meeting else 0
            frames = row["frames"] - last["frames"]
            row["fps"] = frames / dt / steady if steady and dt > 0 else 0.0
            sent = row["sent"] - last["sent"]
            row["delivered"] = frames / steady / sent if steady and sent > 0 else 0.0
        if self.progress and int(row["t"] // 60) > int(self.rows[-1]["t"] // 60 if self.rows
                                                      else -1):
            print(f"  {row['t'] / 60:5.1f} min {self.phase}: RSS {row['rss_mib']:.1f} MiB, "
                  f"tasks {row['tasks']:.0f}, fds {row['fds']:.0f}, pcs {row['pcs']:.0f}, "
                  f"fps {row.get('fps', 0.0):.1f}", file=sys.stderr, flush=True)
        self.rows.append(row)
        return row

    async def run(self) -> None:
        """Until cancelled by its owner (``soak``)."""
        while True:
            await self.sample()
            await asyncio.sleep(self._every)


async def _settle(sampler: Sampler, baseline: dict[str, float], timeout: float) -> float | None:
    """Seconds until every count is at (or under) its baseline; None if never."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        row = await sampler.sample()
        if all(row[k] <= baseline[k] for k in COUNTS):
            return time.monotonic() - started
        await asyncio.sleep(1.0)
    return None


async def soak(plan: SoakPlan, *, progress: bool = False,
               heap: Path | None = None) -> dict[str, Any]:
    """Run the meeting; returns the series and the verdicts (see ``analyse``). ``heap``: a
    directory for the node's heap reports (bench/soak_heap.py) after the warm-up
    (``heap-0``), when the meeting ends (``heap-1``: its differences from the first) and
    once the room is empty (``heap-2``)."""
    clip = encode_video(seconds=2.0, fps=plan.fps, width=plan.width, height=plan.height,
                        bitrate=plan.bitrate)
    async with _node(heap) as server, aiohttp.ClientSession() as http:
        origin = time.monotonic()
        sampler = Sampler(http, server, plan.sample_every, origin)
        sampler.progress = progress
        await asyncio.sleep(1.0)
        baseline = await sampler.sample()
        baseline_tasks = sampler.tasks
        meeting = Meeting(url=f"http://127.0.0.1:{server.port}/", clip=clip,
                          publishers=plan.publishers, subscribers=plan.subscribers,
                          steady=plan.steady)
        try:
            await meeting.open()
            sampler.meeting, sampler.phase = meeting, "meeting"
            began = time.monotonic()
            sampling = asyncio.get_running_loop().create_task(sampler.run())
            try:
                end = began + plan.minutes * 60
                warm: float | None = began + plan.warmup if heap is not None else None
                while time.monotonic() < end:
                    await meeting.step()
                    if warm is not None and time.monotonic() >= warm:
                        warm = None
                        await heap_report(server, heap)
                    await asyncio.sleep(max(0.0, min(plan.interval, end - time.monotonic())))
                await heap_report(server, heap)
            finally:
                sampling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampling
        finally:
            sampler.phase = "empty"
            await meeting.close()
        settled = await _settle(sampler, baseline, plan.settle)
        after = sampler.rows[-1]
        await heap_report(server, heap)
        node_log = server.stderr_tail(4000)
    result = analyse(plan, sampler.rows, baseline, after, settled,
                     failures=meeting.failures, done=meeting.done, began=began - origin)
    result["media_lost"] = meeting.media_lost
    result["tasks_left"] = tasks_left(baseline_tasks, sampler.tasks)
    result["node_log_tail"] = node_log
    return result


def fit_slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 with fewer than two points)."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def _mean(rows: list[dict[str, float]], key: str) -> float:
    values = [r[key] for r in rows if key in r]
    return sum(values) / len(values) if values else 0.0


def analyse(plan: SoakPlan, rows: list[dict[str, float]], baseline: dict[str, float],
            after: dict[str, float], settled: float | None, *, failures: dict[str, int],
            done: dict[str, int], began: float) -> dict[str, Any]:
    meeting = [r for r in rows if r["active"]]
    ended = max((r["t"] for r in meeting), default=began)
    fitted = [r for r in meeting if r["t"] >= began + plan.warmup]
    slope = fit_slope([(r["t"], r["rss_mib"]) for r in fitted]) * 600
    slopes = {key: fit_slope([(r["t"], r[f"{key}_mib"]) for r in fitted
                              if f"{key}_mib" in r]) * 600 for key in ("anon", "file")}
    first = [r for r in fitted if r["t"] < began + plan.warmup + plan.window]
    last = [r for r in fitted if r["t"] > ended - plan.window]
    fps_first, fps_last = _mean(first, "fps"), _mean(last, "fps")
    delivered_first, delivered_last = _mean(first, "delivered"), _mean(last, "delivered")
    return {
        "plan": plan.__dict__,
        "baseline": {k: baseline[k] for k in (*COUNTS, "rss_mib", "threads")},
        "after": {k: after[k] for k in (*COUNTS, "rss_mib", "threads")},
        "settled_seconds": settled,
        "back_to_baseline": {k: after[k] <= baseline[k] for k in COUNTS},
        "rss_slope_mib_per_10min": slope,
        "rss_split_slope_mib_per_10min": slopes,
        "rss_mib": {"baseline": baseline["rss_mib"],
                    "after_warmup": fitted[0]["rss_mib"] if fitted else None,
                    "peak": max((r["rss_mib"] for r in rows), default=0.0),
                    "end": after["rss_mib"]},
        "fps_first_window": fps_first,
        "fps_last_window": fps_last,
        "fps_ratio": fps_last / fps_first if fps_first else 0.0,
        "delivered_first_window": delivered_first,
        "delivered_last_window": delivered_last,
        "packets_per_cpu_s": {"first_window": _mean(first, "packets_per_cpu_s"),
                              "last_window": _mean(last, "packets_per_cpu_s")},
        "actions": done,
        "failures": failures,
        "series": rows,
    }


def write_series(result: dict[str, Any], stem: Path) -> list[Path]:
    """``<stem>.csv`` always; ``<stem>.png`` when matplotlib is installed (``make bench``)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, float]] = result["series"]
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "t", k))
    csv_path = stem.with_suffix(".csv")
    with csv_path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    written = [csv_path]
    with contextlib.suppress(ImportError):
        from bench.soak_plot import plot

        png = stem.with_suffix(".png")
        plot(result, png)
        written.append(png)
    return written


def _rows(f: dict[str, Any]) -> list[Row]:
    base, after = f["baseline"], f["after"]
    counts = ", ".join(f"{k} {base[k]:.0f}→{after[k]:.0f}" for k in COUNTS)
    settled = f["settled_seconds"]
    return [
        Row(figure="RSS slope after warm-up (least squares)",
            value=f"{f['rss_slope_mib_per_10min']:+.2f} MiB / 10 min",
            note=f"bar < 1; RSS {f['rss_mib']['baseline']:.0f} MiB idle, "
                 f"{f['rss_mib']['peak']:.0f} MiB peak, {f['rss_mib']['end']:.0f} MiB emptied"),
        Row(figure="of which anonymous (heaps) / file-backed (libraries)",
            value=f"{f['rss_split_slope_mib_per_10min']['anon']:+.2f} / "
                  f"{f['rss_split_slope_mib_per_10min']['file']:+.2f} MiB / 10 min",
            note="heap reports: " + (f.get("heap") or "—")),
        Row(figure="counts, baseline → room emptied",
            value=counts,
            note="back within " + (f"{settled:.0f} s" if settled is not None else "— (never)")),
        Row(figure="received frame rate per steady subscriber (all streams)",
            value=f"first minute {f['fps_first_window']:.1f} fps, "
                  f"last {f['fps_last_window']:.1f} fps",
            note=f"ratio {f['fps_ratio']:.2f}"),
        Row(figure="share of the frames sent that each steady subscriber received",
            value=f"first minute {f['delivered_first_window']:.2f}, "
                  f"last {f['delivered_last_window']:.2f}",
            note="muted tracks are not forwarded: below 1 by design"),
        Row(figure="forwarded packets per node CPU-second",
            value=f"first minute {f['packets_per_cpu_s']['first_window']:.0f}, "
                  f"last {f['packets_per_cpu_s']['last_window']:.0f}",
            note=""),
        Row(figure="actions done / failed",
            value=f"{sum(f['actions'].values())} / {sum(f['failures'].values())}",
            note=", ".join(f"{k} {v}" for k, v in sorted(f["failures"].items()))),
        Row(figure="clients replaced after losing a peer connection",
            value=str(sum(f["media_lost"].values())),
            note=", ".join(f"{k} {v}" for k, v in sorted(f["media_lost"].items()))),
    ]


def run(*, quick: bool = False, minutes: float | None = None) -> SuiteResult:
    started = time.monotonic()
    if quick:
        plan = SoakPlan(minutes=minutes or 1.5, publishers=2, subscribers=4, steady=2,
                        warmup=20.0, window=30.0)
    else:
        plan = SoakPlan(minutes=minutes or 60.0)
    stem = RESULTS / f"soak-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    heap = stem.with_name(stem.name + "-heap")
    heap.mkdir(parents=True, exist_ok=True)
    figures = asyncio.run(soak(plan, progress=True, heap=heap))
    figures["heap"] = str(heap)
    files = write_series(figures, stem)
    figures["files"] = [str(p) for p in files]
    return SuiteResult(name=NAME, rows=_rows(figures), figures=figures,
                       seconds=time.monotonic() - started)
