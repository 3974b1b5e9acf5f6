"""``parley serve`` with its heap watched: where a churning node's memory goes.

``python -m bench.soak_heap [--trace] [--trim] <dir> <serve flags...>``
runs the node exactly as ``parley serve`` does. Each SIGUSR1 writes ``<dir>/heap-<n>.txt``: the
process's RSS (anonymous and file-backed), Python's small-object arenas, what glibc's
allocator holds and how much of it is free (``mallinfo2``, and per arena), live objects
by type (the ``gc`` census) and, against the first dump, the census's biggest
differences. ``--trace``: the first SIGUSR1 also starts ``tracemalloc`` (so only what is
allocated after it is traced: what the node keeps from then on) and later reports show
its biggest differences by traceback. ``--trim``: after each report ``malloc_trim(0)``,
and the report says how much RSS that gave back (the node also trims every minute on its
own: ``malloc_trim_interval``; set it to 0 to see the heap without). A census
that grows with churn is a leak; RSS that grows while tracemalloc's total and the
census stay flat is the allocator's.

The bench only (never the product): tracemalloc slows the node down several times.
"""

from __future__ import annotations

import ctypes
import gc
import itertools
import os
import re
import signal
import sys
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path
from types import FrameType

FRAMES = 8
"""Traceback depth tracemalloc keeps per allocation."""
TOP = 40


_MALLINFO_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                    "uordblks", "fordblks", "keepcost")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO_FIELDS]


def mallinfo() -> dict[str, int]:
    """glibc's view of the heap, bytes: ``arena`` (main + thread arenas, from sbrk/mmap),
    ``hblkhd`` (large blocks mmapped alone), ``uordblks`` (in use), ``fordblks`` (free)."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return {}
    fn.restype = _MallInfo2
    info = fn()
    return {name: int(getattr(info, name)) for name in _MALLINFO_FIELDS}


def pymalloc() -> dict[str, int]:
    """Python's small-object allocator: its 1 MiB arenas (mmapped, outside ``mallinfo``),
    from ``sys._debugmallocstats`` (which writes to the C stderr)."""
    out: dict[str, int] = {}
    with tempfile.TemporaryFile("w+") as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        for line in tmp:
            for key in ("# arenas allocated current", "# arenas highwater mark",
                        "# bytes in allocated blocks", "# bytes in available blocks",
                        "# bytes lost to pool headers", "# bytes lost to quantization"):
                if line.startswith(key) and "=" in line:
                    out[key.lstrip("# ").replace(" ", "_")] = int(
                        line.split("=")[-1].strip().replace(",", ""))
    return out


def arenas() -> list[tuple[int, int]]:
    """glibc's arenas (main first, then one per thread that allocated, up to 8 per core):
    (bytes held from the system, bytes free inside), from ``malloc_info``."""
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    with tempfile.NamedTemporaryFile(suffix=".xml") as tmp:
        stream = libc.fopen(tmp.name.encode(), b"w")
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        xml = Path(tmp.name).read_text()
    out = []
    for heap in re.findall(r"<heap nr=.*?</heap>", xml, re.S):
        held = re.search(r'<system type="current" size="(\d+)"', heap)
        free = re.findall(r'<total type="(?:fast|rest)" count="\d+" size="(\d+)"', heap)
        out.append((int(held.group(1)) if held else 0, sum(int(f) for f in free)))
    return out


def trim() -> int:
    """``malloc_trim(0)``: glibc gives the free pages inside its heaps back to the system;
    returns the anonymous RSS it freed, KiB."""
    before = status()["RssAnon"]
    ctypes.CDLL(None).malloc_trim(0)
    return before - status()["RssAnon"]


def status() -> dict[str, int]:
    """RSS split by kind, KiB (``/proc/self/status``)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "Threads"):
            out[key] = int(value.split()[0])
    return out


def census() -> Counter[str]:
    """Live objects that the collector tracks, by qualified type name."""
    return Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


class HeapProbe:
    """Writes one report per ``dump()``; the first is the baseline for the diffs."""

    def __init__(self, out: Path, *, trace: bool, trim: bool) -> None:
        self.out = out
        self.trace = trace
        self.trim = trim
        self.dumps = 0
        self._first: tracemalloc.Snapshot | None = None
        self._first_census: Counter[str] = Counter()

    def dump(self) -> Path:
        gc.collect()
        counts = census()
        pystats = pymalloc()  # empty while tracemalloc runs: read it before
        if self.trace and not tracemalloc.is_tracing():
            tracemalloc.start(FRAMES)
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]) if self.trace else None
        current, peak = tracemalloc.get_traced_memory()
        lines = ["status " + " ".join(f"{k}={v}" for k, v in status().items()),
                 "pymalloc " + " ".join(f"{k}={v}" for k, v in pystats.items()),
                 f"tracemalloc_current {current} peak {peak} "
                 f"own {tracemalloc.get_tracemalloc_memory()}",
                 "mallinfo " + " ".join(f"{k}={v}" for k, v in mallinfo().items()),
                 "arenas (held/free MiB) " + " ".join(
                     f"{held / 2**20:.1f}/{free / 2**20:.1f}" for held, free in arenas()),
                 f"objects {sum(counts.values())}", ""]
        if self.dumps == 0:
            self._first, self._first_census = snap, counts
        else:
            lines.append("## census difference against the first dump")
            delta = Counter(counts)
            delta.subtract(self._first_census)
            for name, n in sorted(delta.items(), key=lambda kv: -abs(kv[1]))[:TOP]:
                if n:
                    lines.append(f"{n:+8d} {name} ({counts[name]})")
            lines.append("")
            lines.append("## tracemalloc difference against the first dump, by traceback")
            diffs = snap.compare_to(self._first, "traceback") if snap and self._first else []
            for stat in diffs[:TOP]:
                lines.append(f"{stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+7d} blocks")
                lines.extend("      " + line for line in stat.traceback.format()[-8:])
        lines.append("")
        lines.append("## biggest live types")
        lines.extend(f"{n:8d} {name}" for name, n in counts.most_common(TOP))
        if self.trim:
            lines.insert(0, f"malloc_trim(0) after this report freed {trim()} KiB")
        path = self.out / f"heap-{self.dumps}.txt"
        self.dumps += 1
        partial = path.with_suffix(".part")
        partial.write_text("\n".join(lines) + "\n")
        partial.rename(path)  # whole or absent: the driver waits for it
        return path


def main(argv: list[str]) -> int:
    options = list(itertools.takewhile(lambda a: a.startswith("--"), argv))
    argv = argv[len(options):]
    trace, trim_ = "--trace" in options, "--trim" in options
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    probe = HeapProbe(out, trace=trace, trim=trim_)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        probe.dump()

    signal.signal(signal.SIGUSR1, on_signal)
    from signaling.cli import main as parley

    return parley(["serve", *argv[1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
