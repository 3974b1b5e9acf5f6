"""``parley loadtest``: synthetic rooms of publishers and subscribers against a node.

Publishers loop pre-encoded VP8 (and Opus) packets, so they spend no CPU on
encoding; subscribers count complete frames without decoding. With ``light``
(``--light``), subscribers skip aiortc's receive path altogether and count
packets, frames and gaps from the decrypted RTP headers (client/light.py), in
``processes`` worker processes (client/pool.py), and the result also gives
packets and bytes per frame received against sent, and added latency; without
it, frames are reassembled by aiortc (NACKs answered, retransmissions used),
the mode for correctness runs. Every phase is
bounded in time; the result is one JSON object. Join tokens come from a
``TokenMinter`` the caller gives (``parley loadtest`` signs them with the
node's API key), so the client needs no server code.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from client.client import ParleyClient
from client.light import LightReceiver, SendLog
from client.lightload import Sent, first_frame_delays, sent_now, window_figures
from client.media import EncodedClip, EncodedTrack, encode_audio, encode_video
from client.pool import SubscriberPool


class TokenMinter(Protocol):
    """Signs a join token (docs/auth.md) for ``identity`` in ``room``, valid ``ttl`` seconds."""

    def __call__(self, *, room: str, identity: str, role: str, ttl: float) -> str: ...


@dataclass(frozen=True, kw_only=True)
class LoadSpec:
    url: str
    rooms: int = 1
    publishers: int = 1
    subscribers: int = 2
    duration: float = 10.0
    audio: bool = True
    bitrate: int = 1_000_000
    room_prefix: str = "load"
    join_timeout: float = 20.0
    light: bool = False
    processes: int = 1
    """Light mode: worker processes the subscribers are spread over."""


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _start_publisher(spec: LoadSpec, mint: TokenMinter, room: str, n: int,
                           video: EncodedClip, audio: EncodedClip | None) -> ParleyClient:
    token = mint(room=room, identity=f"pub-{n}", role="speaker", ttl=spec.duration + 600)
    client = ParleyClient(spec.url, token, media=True, decode=False)
    await client.connect()
    tracks = [EncodedTrack(video)] + ([EncodedTrack(audio)] if audio else [])
    await client.publish(*tracks)
    return client


async def _start_subscriber(spec: LoadSpec, mint: TokenMinter, room: str,
                            n: int) -> tuple[ParleyClient, float]:
    token = mint(room=room, identity=f"sub-{n}", role="listener", ttl=spec.duration + 600)
    client = ParleyClient(spec.url, token, media=True, decode=False)
    started = time.perf_counter()
    await client.connect()
    return client, started


def _frames_by_kind(subscribers: list[tuple[ParleyClient, float]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for client, _ in subscribers:
        for mid, count in client.frame_counts.items():
            remote = client.remote.get(mid)
            if remote is not None:
                out[remote.kind] = out.get(remote.kind, 0) + count
    return out


@dataclass(frozen=True)
class _LightSubscriber:
    client: ParleyClient
    light: LightReceiver

    async def close(self) -> None:
        await self.client.leave()


async def parley_subscriber(args: dict[str, Any], index: int) -> _LightSubscriber:
    """A light subscriber joined with ``args["tokens"][index]`` (client/pool.py factory)."""
    light = LightReceiver()
    client = ParleyClient(args["url"], args["tokens"][index], media=True, decode=False,
                          light=light, reconnect=False)
    await client.connect()
    return _LightSubscriber(client, light)


async def run_load(spec: LoadSpec, mint: TokenMinter) -> dict[str, Any]:
    """Start every room, hold the load for ``duration``, close everything; report."""
    if spec.light:
        return await _run_light(spec, mint)
    video = encode_video(seconds=2.0, bitrate=spec.bitrate)
    audio = encode_audio(seconds=1.0) if spec.audio else None
    publishers: list[ParleyClient] = []
    subscribers: list[tuple[ParleyClient, float]] = []
    started = time.perf_counter()
    try:
        async with asyncio.timeout(spec.join_timeout):
            for r in range(spec.rooms):
                room = f"{spec.room_prefix}-{r}"
                publishers += await asyncio.gather(*(
                    _start_publisher(spec, mint, room, p, video, audio)
                    for p in range(spec.publishers)))
            for r in range(spec.rooms):
                room = f"{spec.room_prefix}-{r}"
                subscribers += await asyncio.gather(*(
                    _start_subscriber(spec, mint, room, s) for s in range(spec.subscribers)))
        setup = time.perf_counter() - started
        await asyncio.sleep(min(3.0, spec.duration / 3))
        before = _frames_by_kind(subscribers)
        measured_from = time.perf_counter()
        await asyncio.sleep(spec.duration)
        measured = time.perf_counter() - measured_from
        after = _frames_by_kind(subscribers)
        first_frames = []
        for client, joined_at in subscribers:
            video_mids = [mid for mid, r in client.remote.items() if r.kind == "video"]
            first_frames += [client.first_frame_at[m] - joined_at for m in video_mids
                             if m in client.first_frame_at]
        expected_streams = spec.rooms * spec.publishers * spec.subscribers
        return {
            "spec": asdict(spec),
            "video_streams": expected_streams,
            "video_streams_receiving": len(first_frames),
            "frames_received_per_second":
                (sum(after.values()) - sum(before.values())) / measured,
            "video_frames_received_per_second":
                (after.get("video", 0) - before.get("video", 0)) / measured,
            "audio_frames_received_per_second":
                (after.get("audio", 0) - before.get("audio", 0)) / measured,
            "join_to_first_frame_p50": _quantile(first_frames, 0.5),
            "join_to_first_frame_p99": _quantile(first_frames, 0.99),
            "setup_seconds": setup,
            "measured_seconds": measured,
            "clip_bitrate": sum(len(f) for f in video.frames) * 8 / (len(video.frames) /
                                                                     video.fps),
            "clip_fps": video.fps,
            "first_frame_mean": statistics.fmean(first_frames) if first_frames else None,
        }
    finally:
        # leave, not just close: a dropped socket would be held for the resume window
        for client in [c for c, _ in subscribers] + publishers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.leave(), 5.0)


async def _run_light(spec: LoadSpec, mint: TokenMinter) -> dict[str, Any]:
    """Publishers here, light subscribers in ``spec.processes`` workers; one measured window."""
    video = encode_video(seconds=2.0, bitrate=spec.bitrate)
    audio = encode_audio(seconds=1.0) if spec.audio else None
    log = SendLog()
    publishers: list[ParleyClient] = []
    tracks: list[EncodedTrack] = []
    tokens = [mint(room=f"{spec.room_prefix}-{r}", identity=f"sub-{s}", role="listener",
                   ttl=spec.duration + 600)
              for r in range(spec.rooms) for s in range(spec.subscribers)]
    try:
        for r in range(spec.rooms):
            for p in range(spec.publishers):
                track = EncodedTrack(video)
                track.on_frame = log
                token = mint(room=f"{spec.room_prefix}-{r}", identity=f"pub-{p}",
                             role="speaker", ttl=spec.duration + 600)
                client = ParleyClient(spec.url, token, media=True, decode=False)
                publishers.append(client)
                await client.connect()
                await client.publish(track, *([EncodedTrack(audio)] if audio else []))
                tracks.append(track)
        joined_at = time.monotonic()
        async with SubscriberPool(factory="client.loadtest:parley_subscriber",
                                  args={"url": spec.url, "tokens": tokens}, count=len(tokens),
                                  processes=spec.processes,
                                  join_timeout=spec.join_timeout) as pool:
            setup = time.monotonic() - joined_at
            await asyncio.sleep(min(3.0, spec.duration / 3))
            first = await pool.snapshot()
            sent_a = await _sent(publishers, tracks)
            await asyncio.sleep(spec.duration)
            last = await pool.snapshot()
            sent_b = await _sent(publishers, tracks)
        figures = window_figures(first, last, sent_a, sent_b, log,
                                 frame_ticks=int(video.clock / video.fps))
        delays = first_frame_delays(last, joined_at)
        return {"spec": asdict(spec), "video_streams": len(tokens) * spec.publishers,
                "subscribers_joined": pool.joined, "join_failures": pool.failed[:10],
                "setup_seconds": setup, "join_to_first_frame_p50": _quantile(delays, 0.5),
                "join_to_first_frame_p99": _quantile(delays, 0.99),
                "clip_fps": video.fps, **figures}
    finally:
        for client in publishers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.leave(), 5.0)


async def _sent(publishers: list[ParleyClient], tracks: list[EncodedTrack]) -> Sent:
    parts = [await sent_now(c.publisher, t) for c, t in zip(publishers, tracks, strict=True)
             if c.publisher is not None]
    return Sent(at=time.monotonic(), frames=sum(p.frames for p in parts),
                packets=sum(p.packets for p in parts), bytes=sum(p.bytes for p in parts))
