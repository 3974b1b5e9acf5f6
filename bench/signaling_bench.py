"""The signalling suite: message rate through one node, join latency, memory per participant.

The node runs as ``parley serve`` in its own process; clients run in other
processes (bench/signaling_client.py). Every figure is also taken against a
bare aiohttp broadcast server (bench/baseline_server.py) driven by the same
client code in the same process layout, and Parley is reported as a ratio of it.
See docs/BENCHMARKS.md for what each figure means.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bench.procs import ClientProcess, ServerProcess, free_port, parley_script
from bench.report import Row, SuiteResult, percentile

NAME = "signaling"
KEY, SECRET = "k1", "s1"
CLIENT = "bench.signaling_client"

BENCH_ENV = {
    # The per-connection token bucket (default 20 msg/s, burst 40) would otherwise
    # refuse almost every data message: the benchmark measures the node, not the limit.
    "PARLEY_SIGNALING_RATE_LIMIT_PER_SECOND": "1000000",
    "PARLEY_SIGNALING_RATE_LIMIT_BURST": "1000000",
    # Every client comes from 127.0.0.1: no per-IP caps on sockets and joins.
    "PARLEY_SIGNALING_MAX_CONNECTIONS_PER_IP": "0",
    "PARLEY_SIGNALING_JOIN_RATE_PER_IP": "0",
}


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Sizes and durations of one run of the suite."""

    clients: int = 20
    """Clients in the one room of the message phase (fan-out is clients - 1)."""
    client_processes: int = 2
    duration: float = 10.0
    """Seconds each message phase sends for."""
    window: int = 8
    """Unacknowledged data messages each client may have in flight."""
    payload_bytes: int = 16
    join_rooms: int = 20
    joins_per_room: int = 10
    join_rounds: int = 3
    """Bursts of (join_rooms * joins_per_room) concurrent joins."""
    idle_rooms: int = 10
    idle_per_room: int = 50


FULL = Plan()
QUICK = Plan(clients=6, duration=2.0, join_rooms=4, joins_per_room=5, join_rounds=1,
             idle_rooms=2, idle_per_room=25)

ServerFactory = Callable[[], ServerProcess]


def parley_server() -> ServerProcess:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(BENCH_ENV)
    argv = [parley_script(), "serve", "--port", str(port), "--keys", f"{KEY}:{SECRET}",
            "--log-level", "warning"]
    return ServerProcess("parley serve", argv, port=port, env=env)


def baseline_server() -> ServerProcess:
    port = free_port()
    argv = [sys.executable, "-m", "bench.baseline_server", "--port", str(port)]
    return ServerProcess("baseline server", argv, port=port)


def _spec(server: ServerProcess, mode: str, rooms: list[str], per_room: int,
          **extra: Any) -> dict[str, Any]:
    return {"mode": mode, "url": server.ws_url, "key": KEY, "secret": SECRET,
            "rooms": rooms, "per_room": per_room, **extra}


# -- phases ----------------------------------------------------------------
async def message_rate(factory: ServerFactory, plan: Plan) -> dict[str, Any]:
    """N clients in one room send ``data`` for ``plan.duration`` seconds."""
    sizes = [plan.clients // plan.client_processes
             + (1 if i < plan.clients % plan.client_processes else 0)
             for i in range(plan.client_processes)]
    async with factory() as server, contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(ClientProcess(
                f"flood client {i}", CLIENT,
                _spec(server, "flood", ["flood"], n, prefix=f"p{i}-",
                      duration=plan.duration, window=plan.window,
                      payload_bytes=plan.payload_bytes)))
            for i, n in enumerate(sizes) if n
        ]
        for client in clients:
            await client.read("ready", timeout=60.0)
        cpu0, wall0 = server.cpu_seconds(), time.monotonic()
        for client in clients:
            await client.tell("go")
        results = [await client.read("result", timeout=plan.duration + 30.0)
                   for client in clients]
        cpu, wall = server.cpu_seconds() - cpu0, time.monotonic() - wall0
        for client in clients:
            await client.tell("quit")
        for client in clients:
            await client.finish()

    def total(name: str) -> float:
        return float(sum(r[name] for r in results))

    received = total("received")
    fan_out = plan.clients - 1
    return {
        "clients": plan.clients,
        "fan_out": fan_out,
        "duration_s": plan.duration,
        "relayed_per_s": total("received_in_window") / plan.duration,
        "accepted_per_s": total("acked_in_window") / plan.duration,
        "sent": total("sent"),
        "received": received,
        "missing": total("sent") * fan_out - received,
        "errors": total("errors"),
        "closed_early": total("closed_early"),
        "node_cpu_s": cpu,
        "phase_wall_s": wall,
        "node_cpu_share": cpu / wall,
        "client_cpu_share": total("client_cpu_seconds") / wall,
        "node_cpu_ms_per_1000_relayed": cpu * 1000 / (received / 1000) if received else None,
        "relayed_per_node_cpu_s": received / cpu if cpu else None,
        "loadavg_1min_after": os.getloadavg()[0],
    }


async def join_latency(factory: ServerFactory, plan: Plan) -> dict[str, Any]:
    """Bursts of concurrent connect + join across several rooms."""
    rooms = [f"room{i}" for i in range(plan.join_rooms)]
    async with factory() as server:
        async with ClientProcess("join warm-up", CLIENT,
                                 _spec(server, "joins", ["warm"], 10, prefix="w")) as warm:
            await warm.read("result", timeout=60.0)
            await warm.finish()
        async with ClientProcess("join client", CLIENT,
                                 _spec(server, "joins", rooms, plan.joins_per_room,
                                       rounds=plan.join_rounds)) as client:
            result = await client.read("result", timeout=120.0)
            await client.finish()
    connect: list[float] = result["connect_to_joined_ms"]
    join: list[float] = result["join_to_joined_ms"]
    return {
        "concurrent": len(rooms) * plan.joins_per_room,
        "rooms": len(rooms),
        "rounds": plan.join_rounds,
        "samples": len(connect),
        "connect_to_joined_ms": {"p50": percentile(connect, 50), "p99": percentile(connect, 99),
                                 "max": max(connect)},
        "join_to_joined_ms": {"p50": percentile(join, 50), "p99": percentile(join, 99),
                              "max": max(join)},
    }


async def idle_memory(factory: ServerFactory, plan: Plan) -> dict[str, Any]:
    """Node RSS before and after ``idle_rooms * idle_per_room`` idle joined participants."""
    rooms = [f"idle{i}" for i in range(plan.idle_rooms)]
    count = len(rooms) * plan.idle_per_room
    async with factory() as server:
        # A few joins first, so lazily created state is not charged to the participants.
        async with ClientProcess("idle warm-up", CLIENT,
                                 _spec(server, "idle", ["warm"], 5, prefix="w")) as warm:
            await warm.read("ready", timeout=60.0)
            await warm.tell("quit")
            await warm.finish()
        await asyncio.sleep(1.0)
        before = server.rss_kib()
        async with ClientProcess("idle client", CLIENT,
                                 _spec(server, "idle", rooms, plan.idle_per_room,
                                       concurrency=50)) as client:
            ready = await client.read("ready", timeout=120.0)
            await asyncio.sleep(1.0)
            after = server.rss_kib()
            await client.tell("quit")
            await client.finish()
    if ready["clients"] != count:
        raise RuntimeError(f"only {ready['clients']} of {count} participants joined")
    return {"participants": count, "rooms": len(rooms), "rss_before_kib": before,
            "rss_after_kib": after, "kib_per_participant": (after - before) / count}


# -- the suite -------------------------------------------------------------
def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


async def _measure(plan: Plan) -> dict[str, Any]:
    figures: dict[str, Any] = {"plan": asdict(plan), "node_env": BENCH_ENV}
    for name, factory in (("parley", parley_server), ("baseline", baseline_server)):
        figures[name] = {
            "message_rate": await message_rate(factory, plan),
            "join_latency": await join_latency(factory, plan),
            "idle_memory": await idle_memory(factory, plan),
        }
    p, b = figures["parley"], figures["baseline"]
    figures["ratios"] = {
        "relay_rate": _ratio(p["message_rate"]["relayed_per_s"],
                             b["message_rate"]["relayed_per_s"]),
        "cpu_per_relayed": _ratio(p["message_rate"]["node_cpu_ms_per_1000_relayed"],
                                  b["message_rate"]["node_cpu_ms_per_1000_relayed"]),
        "join_p50": _ratio(p["join_latency"]["connect_to_joined_ms"]["p50"],
                           b["join_latency"]["connect_to_joined_ms"]["p50"]),
        "memory_per_participant": _ratio(p["idle_memory"]["kib_per_participant"],
                                         b["idle_memory"]["kib_per_participant"]),
    }
    return figures


def _fmt(value: float | None, spec: str = ".2f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def _rows(f: dict[str, Any]) -> list[Row]:
    plan, ratios = f["plan"], f["ratios"]
    pm, bm = f["parley"]["message_rate"], f["baseline"]["message_rate"]
    pj, bj = f["parley"]["join_latency"], f["baseline"]["join_latency"]
    pi, bi = f["parley"]["idle_memory"], f["baseline"]["idle_memory"]
    setup = (f"{plan['clients']} clients in 1 room (fan-out {pm['fan_out']}), "
             f"window {plan['window']}, {plan['duration']:g} s")

    def pct(m: dict[str, Any]) -> str:
        return f"{m['p50']:.1f} / {m['p99']:.1f} ms"

    def health(m: dict[str, Any]) -> str:
        return (f"node {m['node_cpu_share']:.0%} of a core, clients {m['client_cpu_share']:.0%}; "
                f"missing {m['missing']:.0f}, errors {m['errors']:.0f}")

    return [
        Row(figure="data relayed to clients/s (Parley)",
            value=_fmt(pm["relayed_per_s"], ",.0f", " msg/s"), note=setup),
        Row(figure="data accepted by the node/s (Parley)",
            value=_fmt(pm["accepted_per_s"], ",.0f", " msg/s"), note=health(pm)),
        Row(figure="data relayed to clients/s (baseline)",
            value=_fmt(bm["relayed_per_s"], ",.0f", " msg/s"), note=health(bm)),
        Row(figure="relay rate, Parley ÷ baseline", value=_fmt(ratios["relay_rate"]),
            note="higher is better; moves with other load on the machine, see CPU rows"),
        Row(figure="node CPU per 1000 relayed (Parley)",
            value=_fmt(pm["node_cpu_ms_per_1000_relayed"], ".1f", " ms"),
            note=f"= {_fmt(pm['relayed_per_node_cpu_s'], ',.0f')} relayed per CPU-second"),
        Row(figure="node CPU per 1000 relayed (baseline)",
            value=_fmt(bm["node_cpu_ms_per_1000_relayed"], ".1f", " ms"),
            note=f"= {_fmt(bm['relayed_per_node_cpu_s'], ',.0f')} relayed per CPU-second"),
        Row(figure="CPU per relayed message, Parley ÷ baseline",
            value=_fmt(ratios["cpu_per_relayed"]),
            note="lower is better; 1.0 = as cheap as bare aiohttp"),
        Row(figure="join p50 / p99, connect → joined (Parley)",
            value=pct(pj["connect_to_joined_ms"]),
            note=f"{pj['samples']} joins: {pj['rounds']} bursts of {pj['concurrent']} "
                 f"concurrent over {pj['rooms']} rooms"),
        Row(figure="join p50 / p99, join sent → joined (Parley)",
            value=pct(pj["join_to_joined_ms"]), note="excludes the WebSocket handshake"),
        Row(figure="join p50 / p99, connect → joined (baseline)",
            value=pct(bj["connect_to_joined_ms"]),
            note=f"p50 ratio Parley ÷ baseline {_fmt(ratios['join_p50'])}"),
        Row(figure="node RSS per idle participant (Parley)",
            value=_fmt(pi["kib_per_participant"], ".1f", " KiB"),
            note=f"{pi['participants']} in {pi['rooms']} rooms: "
                 f"RSS {pi['rss_before_kib'] / 1024:.1f} → {pi['rss_after_kib'] / 1024:.1f} MiB"),
        Row(figure="node RSS per idle connection (baseline)",
            value=_fmt(bi["kib_per_participant"], ".1f", " KiB"),
            note=f"ratio Parley ÷ baseline {_fmt(ratios['memory_per_participant'])}"),
    ]


def run(*, quick: bool = False) -> SuiteResult:
    plan = QUICK if quick else FULL
    started = time.monotonic()
    figures = asyncio.run(_measure(plan))
    return SuiteResult(name=NAME, rows=_rows(figures), figures=figures,
                       seconds=time.monotonic() - started)
