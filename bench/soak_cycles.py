"""The soak's churn, concentrated: join/publish/subscribe/leave cycles with the node's
heap reported before and after (bench/soak_heap.py).

``python -m bench.soak_cycles [--cycles N] [--warmup W] [--out DIR]``: a node under
``bench.soak_heap``; a steady publisher and a steady subscriber stay all along. Each
cycle a new subscriber joins and receives, a new publisher joins and publishes, the
steady publisher mutes and unmutes, a socket joins without media, and all three go
(alternately with ``leave`` and by dropping the socket, which the node holds for its
resume window). After ``warmup`` cycles the node writes its first heap report, after
``cycles`` more (and the resume window) its second: ``DIR/heap-1.txt`` holds the
differences.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.procs import ServerProcess, free_port, rss_kib
from bench.soak_bench import CONFIG, heap_report, scrape
from bench.soak_scenario import KEY, SECRET, STEP_TIMEOUT, CountedTrack, token
from client.client import ClientError, ParleyClient
from client.media import EncodedClip, encode_video

RESUME_WINDOW = 2.0
"""Seconds the node holds a dropped socket's session here (``signaling.resume_window``)."""


def _node(out: Path, config_path: str, probe: list[str]) -> ServerProcess:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env["PARLEY_SIGNALING_RESUME_WINDOW"] = str(RESUME_WINDOW)
    argv = [sys.executable, "-m", "bench.soak_heap", *probe, str(out), "--port", str(port),
            "--keys", f"{KEY}:{SECRET}", "--config", config_path, "--log-level", "warning"]
    return ServerProcess("parley serve (heap)", argv, port=port, env=env)


async def _client(url: str, identity: str, role: str, *, media: bool = True) -> ParleyClient:
    client = ParleyClient(url, token(identity, role), media=media, decode=False,
                          reconnect=False)
    await client.connect()
    return client


async def _gone(client: ParleyClient, n: int) -> None:
    if n % 2:
        await client.leave()
    else:
        await client.close()


async def cycle(url: str, clip: EncodedClip, n: int, steady_pub: ParleyClient,
                camera: str) -> None:
    made: list[ParleyClient] = []
    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            made.append(sub := await _client(url, f"sub-{n}", "listener"))
            await sub.next_track(timeout=STEP_TIMEOUT)
            made.append(pub := await _client(url, f"pub-{n}", "speaker"))
            await pub.publish(CountedTrack(clip), sources=["camera"])
            await sub.next_track(timeout=STEP_TIMEOUT)
            with contextlib.suppress(ClientError):  # gone if its connection was replaced
                for muted in (True, False):
                    await steady_pub.request({"type": "mute-track", "track": camera,
                                              "muted": muted})
            made.append(await _client(url, f"sig-{n}", "listener", media=False))
            await asyncio.sleep(0.5)
    finally:
        for client in reversed(made):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STEP_TIMEOUT):
                    await _gone(client, n)
            await client.close()


async def run(cycles: int, warmup: int, out: Path, probe: list[str]) -> None:
    clip = encode_video(seconds=2.0, fps=15, width=160, height=120, bitrate=100_000)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config:
        config.write(CONFIG)
    try:
        async with _node(out, config.name, probe) as server:
            import aiohttp

            url = f"http://127.0.0.1:{server.port}/"
            pid = server.pid
            steady_pub = await _client(url, "steady-pub", "speaker")
            [info] = await steady_pub.publish(CountedTrack(clip), sources=["camera"])
            steady_sub = await _client(url, "steady-sub", "listener")
            async with aiohttp.ClientSession() as http:
                for n in range(warmup + cycles):
                    if n == warmup:
                        await asyncio.sleep(RESUME_WINDOW + 3)
                        await heap_report(server, out)
                        print(f"warm: {await scrape(http, server.port)}", flush=True)
                    started, outcome = time.monotonic(), "ok"
                    try:
                        await cycle(url, clip, n, steady_pub, str(info["id"]))
                    except Exception as exc:  # counted; the next cycle starts afresh
                        outcome = f"failed ({type(exc).__name__})"
                    print(f"cycle {n}: {outcome} {time.monotonic() - started:.1f} s, "
                          f"RSS {rss_kib(pid) / 1024:.1f} MiB", flush=True)
                await asyncio.sleep(RESUME_WINDOW + 3)
                print(f"end: {await scrape(http, server.port)}", flush=True)
                await heap_report(server, out)
            print(f"frames at the steady subscriber: {steady_sub.frame_counts}")
            await steady_sub.leave()
            await steady_pub.leave()
    finally:
        os.unlink(config.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("bench/results/heap"))
    parser.add_argument("--trace", action="store_true", help="tracemalloc after warm-up")
    parser.add_argument("--trim", action="store_true", help="malloc_trim(0) after each report")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    probe = ["--trace"] * args.trace + ["--trim"] * args.trim
    asyncio.run(run(args.cycles, args.warmup, args.out, probe))


if __name__ == "__main__":
    main()
