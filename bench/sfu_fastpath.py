"""The SFU suite's fast-path phase: the same fan-outs through both sender paths.

For each fan-out (one video-only publisher, S subscribers) a fresh node runs
with ``sfu.fast_path: false`` (aiortc's sender, one task per subscriber), then
one with ``sfu.fast_path: true``, under the same load, one after the other. The
figures are the node's CPU per forwarded packet, the added latency, and what
each forwarded frame carried (bytes, packets) next to what the publisher sends
(the clip's bytes per frame), with the key-frame requests subscribers sent.
See docs/BENCHMARKS.md ("Fast path").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bench.procs import BenchError
from bench.report import Row

Measure = Callable[[dict[str, Any], Any, str], Awaitable[dict[str, Any]]]
"""``sfu_bench.measure(config, load, label)``."""
PATHS = (("aiortc sender", False), ("fast path", True))


def path_config(base: dict[str, Any], fast: bool) -> dict[str, Any]:
    return {**base, "sfu": {**base["sfu"], "fast_path": fast}}


async def fast_path_phase(fan_outs: tuple[int, ...], window: float, base: dict[str, Any],
                          measure: Measure, load_of: Callable[[int, str], Any]
                          ) -> list[dict[str, Any]]:
    """One entry per fan-out: ``{"subscribers": S, "aiortc sender": {...}, "fast path": {...}}``."""
    results = []
    for subscribers in fan_outs:
        entry: dict[str, Any] = {"subscribers": subscribers, "window": window}
        for name, fast in PATHS:
            load = load_of(subscribers, f"fp{subscribers}-{int(fast)}")
            try:
                entry[name] = await measure(path_config(base, fast), load,
                                            f"parley serve ({name}, {subscribers} subscribers)")
            except BenchError as exc:
                entry[name] = {"failed": str(exc)[:500]}
        old, new = entry[PATHS[0][0]], entry[PATHS[1][0]]
        entry["cpu_per_packet_ratio"] = (
            old["packets_per_cpu_s"] and new.get("packets_per_cpu_s")
            and new["packets_per_cpu_s"] / old["packets_per_cpu_s"]) \
            if "failed" not in old and "failed" not in new else None
        results.append(entry)
    return results


def _us(value: float | None) -> str:
    return "n/a" if not value else f"{1e6 / value:.1f} µs"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.2f} ms"


def _frame_note(f: dict[str, Any]) -> str:
    clip = f.get("clip_bytes_per_frame")
    sent = f.get("bytes_per_frame")
    share = f"{sent / clip:.0%} of the clip's {clip:,.0f}" if clip and sent else "n/a"
    return (f"{_fmt(sent, ',.0f')} bytes and {_fmt(f.get('packets_per_frame'), '.2f')} "
            f"packets per forwarded frame ({share}); key-frame requests from subscribers "
            f"{_fmt(f.get('keyframe_requests_per_s'), '.1f')}/s, packets resent for NACKs "
            f"{_fmt(f.get('retransmitted_per_s'), ',.0f')}/s (fast path only)")


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else f"{value:{spec}}"


def fast_path_rows(results: list[dict[str, Any]]) -> list[Row]:
    rows = []
    for entry in results:
        subs = entry["subscribers"]
        for name, _ in PATHS:
            f = entry[name]
            if "failed" in f:
                rows.append(Row(figure=f"1 → {subs}, {name}", value="failed",
                                note=f["failed"].splitlines()[0]))
                continue
            rows.append(Row(
                figure=f"1 → {subs}, {name}: node CPU per forwarded packet",
                value=_us(f["packets_per_cpu_s"]),
                note=(f"node {f['node_cpu_share']:.0%} of a core, {f['packets_per_s']:,.0f} pkt/s, "
                      f"latency p50 {_ms(f['latency_p50_s'])} / p99 {_ms(f['latency_p99_s'])}; "
                      f"node sent {_fmt(f['node_handed_out'], '.1%')} of the frames, "
                      f"subscribers got {_fmt(f['delivered'], '.1%')} (loadtest "
                      f"{f['load_cpu_share']:.0%}, other {f['other_cpu_share']:.0%}); "
                      + _frame_note(f))))
        ratio = entry["cpu_per_packet_ratio"]
        rows.append(Row(figure=f"1 → {subs}: CPU per packet, aiortc sender ÷ fast path",
                        value=_fmt(ratio, ".2f") + ("x" if ratio else ""),
                        note="same load, one node after the other; bar ≥ 2.5x"))
    return rows
