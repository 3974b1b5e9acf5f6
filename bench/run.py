"""Run benchmark suites: ``python -m bench.run [suite ...] [--quick] [--minutes M]``.

With no suite named, every suite runs except the long ones (``soak``), which run
only when named; ``--minutes`` sets how long a long suite runs.

Each suite is a module with ``run(*, quick: bool) -> SuiteResult``. The
driver prints one markdown table on stdout and writes every raw figure, the
command and the machine to ``bench/results/<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import platform
import signal
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

from bench.report import SuiteResult, markdown_table

SUITES: dict[str, str] = {
    "signaling": "bench.signaling_bench",
    "sfu": "bench.sfu_bench",
    "bandwidth": "bench.bandwidth_bench",
    "stage": "bench.stage_bench",
    "rendition": "bench.rendition_bench",
    "udpmux": "bench.udpmux_bench",
    "cluster": "bench.cluster_bench",
    "peers": "bench.peers_bench",
    "soak": "bench.soak_bench",
}
"""Suite name → module."""
LONG = frozenset({"soak"})
"""Suites that run only when named."""

RESULTS = Path(__file__).resolve().parent / "results"


class Suite(Protocol):
    def run(self, *, quick: bool = False) -> SuiteResult: ...


def _options(suite: Suite, minutes: float | None,
             fanouts: tuple[int, ...] | None) -> dict[str, Any]:
    """``minutes`` and ``fanouts`` for the suites that take them."""
    takes = inspect.signature(suite.run).parameters
    options: dict[str, Any] = {}
    if minutes is not None and "minutes" in takes:
        options["minutes"] = minutes
    if fanouts is not None and "fanouts" in takes:
        options["fanouts"] = fanouts
    return options


def _fanouts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"fan-outs must be positive: {text!r}")
    return values


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suites", nargs="*", metavar="SUITE",
                        help=f"suites to run: {', '.join(SUITES)}; default all but "
                             f"{', '.join(sorted(LONG))}")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and short phases: checks the harness, not the node")
    parser.add_argument("--minutes", type=float, default=None,
                        help="how long a long suite runs (soak: default 60)")
    parser.add_argument("--fanouts", type=_fanouts, default=None, metavar="N,N",
                        help="subscribers per publisher the peers suite measures "
                             "(default 40,150)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS,
                        help="where the JSON result goes (default bench/results)")
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # SIGTERM and SIGINT unwind like Ctrl-C, so each phase's ``finally`` kills its processes.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    names: list[str] = args.suites or [n for n in SUITES if n not in LONG]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(f"unknown suite(s): {', '.join(unknown)}; known: {', '.join(SUITES)}",
              file=sys.stderr)
        return 2
    started = datetime.now(UTC)
    info = machine()
    print(f"# Parley benchmarks, {started:%Y-%m-%d %H:%M} UTC: nproc {info['nproc']}, "
          f"Python {info['python']}{' (quick)' if args.quick else ''}", file=sys.stderr)
    results: list[SuiteResult] = []
    loads: dict[str, dict[str, float]] = {}
    for name in names:
        suite = cast(Suite, importlib.import_module(SUITES[name]))
        print(f"running {name} ...", file=sys.stderr, flush=True)
        begun = time.monotonic()
        load = os.getloadavg()[0]
        try:
            options = _options(suite, args.minutes, args.fanouts)
            results.append(suite.run(quick=args.quick, **options))
        except KeyboardInterrupt:
            print(f"{name} interrupted; its processes were stopped", file=sys.stderr)
            return 130
        loads[name] = {"start": load, "end": os.getloadavg()[0]}
        print(f"{name} done in {time.monotonic() - begun:.0f} s", file=sys.stderr, flush=True)
    record = {
        "started": started.isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, "-m", "bench.run", *(argv or sys.argv[1:])],
        "quick": args.quick,
        "machine": info,
        "suites": {r.name: {"seconds": r.seconds, "loadavg_1min": loads[r.name],
                            "figures": r.figures,
                            "rows": [asdict(row) for row in r.rows]} for r in results},
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"{started:%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(markdown_table(results))
    print(f"\nraw figures: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
