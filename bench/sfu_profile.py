"""Profile a forwarding node under load: ``python -m bench.sfu_profile [options]``.

Runs the node as ``python -m cProfile -o <file> -m signaling.cli serve`` with the
SFU suite's config, puts one ``parley loadtest`` room on it (one publisher,
``--subscribers`` subscribers), stops the node with SIGTERM (it drains and
exits, so cProfile writes its file) and prints the top functions by own time
and by cumulative time. Bounded: the load runs ``--duration`` seconds, every
wait has a timeout, both processes are killed on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import pstats
import signal
import sys
import tempfile
from pathlib import Path

from bench.procs import ServerProcess, free_port
from bench.sfu_bench import FORWARD_CONFIG, KEY, SECRET, clean_env, load_generator


async def profile(*, subscribers: int, duration: float, audio: bool, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="parley-sfu-profile-") as tmp:
        config = Path(tmp) / "node.yaml"
        config.write_text(json.dumps(FORWARD_CONFIG))
        port = free_port()
        argv = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "signaling.cli",
                "serve", "--port", str(port), "--config", str(config),
                "--keys", f"{KEY}:{SECRET}", "--log-level", "warning"]
        async with ServerProcess("parley serve (cProfile)", argv, port=port,
                                 env=clean_env()) as node:
            async with load_generator(port=port, publishers=1, subscribers=subscribers,
                                     duration=duration, audio=audio, prefix="prof") as load:
                result = await load.result(timeout=duration + 60.0)
            print(json.dumps({k: result[k] for k in (
                "video_streams_receiving", "frames_received_per_second")}), file=sys.stderr)
            if node.proc is not None:
                node.proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(node.proc.wait(), 30.0)


def summary(path: Path, top: int) -> str:
    buffer = io.StringIO()
    stats = pstats.Stats(str(path), stream=buffer)
    stats.strip_dirs()
    for order in ("tottime", "cumulative"):
        print(f"\n=== top {top} by {order} ===", file=buffer)
        stats.sort_stats(order).print_stats(top)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sfu_profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=40)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--audio", action="store_true", help="publish audio too")
    parser.add_argument("--out", type=Path, default=Path("sfu-node.prof"))
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    asyncio.run(profile(subscribers=args.subscribers, duration=args.duration,
                        audio=args.audio, out=args.out))
    print(summary(args.out, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
