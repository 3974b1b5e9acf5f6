"""The peers suite's table: per fan-out, Janus and Parley side by side, and the ratios."""

from __future__ import annotations

from typing import Any

from bench.report import Row


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1e6:.1f} µs"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1e3:.1f} ms"


def _num(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else f"{value:{spec}}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "n/a"


def _policy(run: dict[str, Any]) -> str:
    return "under SCHED_BATCH" if run.get("load_batch_threads") else "at normal policy"


def _run_rows(run: dict[str, Any]) -> list[Row]:
    tag = f"{run['server']} 1→{run['fanout']}"
    if "failed" in run:
        return [Row(figure=f"{tag}", value="failed", note=run["failed"].splitlines()[0])]
    return [
        Row(figure=f"server CPU per forwarded packet ({tag})",
            value=_us(run["server_cpu_per_packet_s"]),
            note=f"server {run['server_cpu_share']:.0%} of a core, "
                 f"{run['received_packets_per_s']:,.0f} packets/s received, "
                 f"{run['received_mbit_per_s']:.1f} Mbit/s; load generator "
                 f"{run['load_cpu_share']:.0%} of a core (light subscribers "
                 f"{_us(run.get('subscriber_cpu_per_packet_s'))} a packet), other processes "
                 f"{run['other_cpu_share']:.0%}; {run['window_s']:.0f} s"
                 + (f"; server preempted {run['server_preemptions_per_s']:,.0f} times a "
                    f"second (load generator {_policy(run)})"
                    if run.get("server_preemptions_per_s") is not None else "")),
        Row(figure=f"added latency p50 / p99 ({tag})",
            value=f"{_ms(run['latency_p50_s'])} / {_ms(run['latency_p99_s'])}",
            note=f"publisher hands a frame to its sender → a subscriber has all of it; "
                 f"{run['latency_samples']} frames, max {_ms(run['latency_max_s'])}"
                 + (f"; {run['latency_unpaired']} frames later than 1.5 s, left out"
                    if run["latency_unpaired"] else "")
                 + (f"; inside the node (last packet in → last packet out to each "
                    f"subscriber) p50 {_ms(run['node_latency_p50_s'])}, p99 "
                    f"{_ms(run['node_latency_p99_s'])}"
                    + (f" ({run['node_latency_within_15ms']:.1%} within 15 ms)"
                       if run.get("node_latency_within_15ms") is not None else "")
                    + f"; {run['node_full_collections']:.0f} "
                    f"full garbage collections, {_ms(run['node_full_collection_s'])} in all"
                    if run.get("node_latency_p99_s") is not None else "")),
        Row(figure=f"streams verified ({tag})",
            value=f"{run['streams_verified']} / {run['streams']}",
            note=f"≥ 99 % of the frames their RTP timestamps span; least "
                 f"{_num(run['delivered_min'], '.1%')}, "
                 f"mean {_num(run['delivered_mean'], '.1%')}; {run['lost_packets']} packets "
                 f"lost; {run['subscribers_joined']} joined"),
        Row(figure=f"packets / bytes per frame, received vs sent ({tag})",
            value=f"{_num(run['received_packets_per_frame'])} / "
                  f"{_num(run['received_bytes_per_frame'], ',.0f')}",
            note=f"publisher sent {_num(run['sent_packets_per_frame'])} packets, "
                 f"{_num(run['sent_bytes_per_frame'], ',.0f')} payload bytes per frame"
                 + (f"; the node says it sent {_num(run['node_packets_per_frame'])} / "
                    f"{_num(run['node_bytes_per_frame'], ',.0f')}, "
                    f"{run['node_frames_out_per_s']:,.0f} frames/s (subscribers got "
                    f"{run['received_frames_per_s']:,.0f})"
                    if run.get("node_packets_per_frame") else "")),
    ]


def _unlike(janus: dict[str, Any], parley: dict[str, Any]) -> str:
    """A warning when the two did not carry the same load (the ratio then means little)."""
    short = [f"{r['server']} delivered {_num(r['delivered_mean'], '.0%')}"
             for r in (janus, parley) if (r["delivered_mean"] or 0.0) < 0.99]
    return f"; not the same load: {', '.join(short)}" if short else ""


def _versus(figure: str, run: dict[str, Any], base: dict[str, Any], what: str) -> list[Row]:
    """``run`` ÷ ``base``: CPU per packet, and the latencies (both measured, else nothing)."""
    if not run or not base or "failed" in run or "failed" in base:
        return []
    node = (f", in the node p99 {_ratio(run['node_latency_p99_s'], base['node_latency_p99_s'])}"
            if run.get("node_latency_p99_s") and base.get("node_latency_p99_s") else "")
    return [Row(figure=figure,
                value=_ratio(run["server_cpu_per_packet_s"], base["server_cpu_per_packet_s"]),
                note=f"{what}; latency p50 {_ratio(run['latency_p50_s'], base['latency_p50_s'])}"
                     f", p99 {_ratio(run['latency_p99_s'], base['latency_p99_s'])}{node}"
                     + _unlike(base, run))]


def rows(figures: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    runs = figures["runs"]
    for fanout in figures["plan"]["fanouts"]:
        pair = {r["server"]: r for r in runs if r["fanout"] == fanout}
        for server in ("janus", "parley-python", "parley"):
            if server in pair:
                out += _run_rows(pair[server])
        janus, parley = pair.get("janus", {}), pair.get("parley", {})
        python = pair.get("parley-python", {})
        out += _versus(f"compiled ÷ Python per-packet loop at 1→{fanout}", parley, python,
                       "Parley's CPU per forwarded packet (sfu.native_loop)")
        out += _versus(f"Parley ÷ Janus at 1→{fanout}", parley, janus,
                       "CPU per forwarded packet")
    if figures.get("disturbed_attempts"):
        out.append(Row(figure="repeated measurements", value=str(len(
            figures["disturbed_attempts"])), note="other processes used more than 40 % of a "
            "core during the first attempt; the JSON keeps it"))
    if not figures.get("janus_installed", True):
        out.append(Row(figure="janus", value="not installed", note="only Parley was measured"))
    return out
