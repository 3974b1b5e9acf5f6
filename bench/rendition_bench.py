"""What a shared low-bitrate rendition costs: decode once, encode once per tier.

In process, on the same pre-encoded 640x480 VP8 clip the load generator uses:
the publisher's frames are decoded once (shared by every tier) and encoded at
each tier of ``sfu.rendition.DEFAULT_TIERS``, exactly as a RenditionSet's
worker does. Reported as CPU per second of video, so it compares directly
with the SFU suite's forwarding CPU per video stream-second.
"""

from __future__ import annotations

import time

import av
from aiortc.codecs.vpx import Vp8Decoder
from aiortc.jitterbuffer import JitterFrame

from bench.report import Row, SuiteResult
from client.media import encode_video
from sfu.rendition import DEFAULT_TIERS, _Encoder

NAME = "rendition"


def _measure(seconds: float) -> dict[str, float]:
    clip = encode_video(seconds=seconds, bitrate=900_000)
    decoder = Vp8Decoder()
    encoders = {tier: _Encoder(tier) for tier in DEFAULT_TIERS}
    decode_cpu = 0.0
    encode_cpu = dict.fromkeys(DEFAULT_TIERS, 0.0)
    encoded_bytes = dict.fromkeys(DEFAULT_TIERS, 0)
    for i, data in enumerate(clip.frames):
        started = time.process_time()
        pictures = decoder.decode(JitterFrame(data, i * 3000))
        decode_cpu += time.process_time() - started
        for picture in pictures:
            if not isinstance(picture, av.VideoFrame):
                continue
            for tier, encoder in encoders.items():
                started = time.process_time()
                encoded_bytes[tier] += len(encoder.encode(picture, keyframe=(i == 0)))
                encode_cpu[tier] += time.process_time() - started
    video_seconds = len(clip.frames) / clip.fps
    out = {"video_seconds": video_seconds,
           "decode_ms_per_second": decode_cpu / video_seconds * 1000}
    for tier in DEFAULT_TIERS:
        out[f"encode_{tier.bitrate}_ms_per_second"] = encode_cpu[tier] / video_seconds * 1000
        out[f"encode_{tier.bitrate}_kbps"] = encoded_bytes[tier] * 8 / video_seconds / 1000
    return out


def run(*, quick: bool = False) -> SuiteResult:
    started = time.monotonic()
    f = _measure(2.0 if quick else 10.0)
    rows = [Row(figure="decode, once per publisher (640x480 VP8)",
                value=f"{f['decode_ms_per_second']:.1f} ms CPU per video second",
                note=f"{f['video_seconds']:.0f} s of the load generator's clip")]
    total = f["decode_ms_per_second"]
    for tier in DEFAULT_TIERS:
        key = f"encode_{tier.bitrate}"
        total += f[f"{key}_ms_per_second"]
        rows.append(Row(
            figure=f"encode tier {tier.bitrate // 1000} kbit/s (1/{tier.scale} size)",
            value=f"{f[f'{key}_ms_per_second']:.1f} ms CPU per video second",
            note=f"produced {f[f'{key}_kbps']:.0f} kbit/s"))
    rows.append(Row(figure="one publisher, both tiers running",
                    value=f"{total:.1f} ms CPU per video second ({total / 10:.1f} % of a core)",
                    note="compare: forwarding costs ~17 ms per video stream-second (sfu suite)"))
    return SuiteResult(name=NAME, rows=rows, figures=f, seconds=time.monotonic() - started)
