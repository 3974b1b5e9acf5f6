"""Light receiving: count RTP packets, frames and gaps from decrypted headers.

A subscriber that must out-run the node cannot afford aiortc's receive path
(``RtpPacket`` parsing, NACK bookkeeping, depacketizing, a jitter buffer).
ICE and DTLS-SRTP complete as usual; then every RTP packet the transport
decrypts goes to a ``LightReceiver`` (client/hooks.py ``divert_rtp``), which
reads the fixed header, skips the extensions and, for VP8, the payload
descriptor's S bit and partition index:

- packets and payload bytes per stream (SSRC);
- sequence numbers skipped (``lost``; nothing is retransmitted, no NACK is sent);
- video frames (a packet with the marker bit ends one) and *complete* frames
  (every packet from the start of partition 0 to the marker arrived);
- for latency, the first bytes of each complete frame's VP8 data with the time
  its last packet arrived: the publisher logs the same bytes when it hands the
  frame to its sender (``EncodedTrack.on_frame``), and ``latencies`` pairs
  them. The frame's bytes survive any SFU that forwards without transcoding,
  whatever it does to SSRCs, sequence numbers, timestamps or descriptors.

Times are ``time.monotonic()``, one clock for every process of the machine.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection

from client.hooks import divert_rtp

KEY_BYTES = 20
"""How many leading bytes of a VP8 frame identify it within the clip."""
SAMPLE_LIMIT = 20_000
"""Latency samples kept between two ``take_samples`` calls, per receiver."""
_SKIPPED_CODECS = frozenset({"rtx", "red", "ulpfec", "flexfec-03"})


def frame_key(frame: bytes) -> str:
    """The identity of a VP8 frame for latency pairing (its first ``KEY_BYTES``)."""
    return frame[:KEY_BYTES].hex()


def payload_kinds(sdp: str) -> dict[int, str]:
    """Media payload type → kind (``audio``/``video``) from an SDP; RTX, RED, FEC left out."""
    kinds: dict[int, str] = {}
    kind = ""
    for line in sdp.splitlines():
        if line.startswith("m="):
            kind = line[2:].split(" ", 1)[0]
        elif line.startswith("a=rtpmap:") and kind in ("audio", "video"):
            pt, _, codec = line[len("a=rtpmap:"):].partition(" ")
            if codec.split("/", 1)[0].lower() not in _SKIPPED_CODECS:
                kinds[int(pt)] = kind
    return kinds


@dataclass
class StreamCount:
    """What one received RTP stream (SSRC) brought so far."""

    kind: str
    packets: int = 0
    bytes: int = 0
    """Payload bytes (after the RTP header and extensions, padding excluded)."""
    frames: int = 0
    """Audio: packets with a payload. Video: packets with the marker bit."""
    complete: int = 0
    """Video frames every packet of which arrived (audio: as ``frames``)."""
    lost: int = 0
    """Sequence numbers skipped."""
    first_complete_at: float | None = None
    ticks: int = 0
    """RTP clock ticks from the first frame's marker to the latest one's: how many frames
    the sender produced meanwhile, whether they came or not (``ticks / (clock / fps)``)."""
    marker_ts: int = -1
    last_seq: int = -1
    frame_ts: int = -1
    frame_start: int = -1
    frame_seen: int = 0
    frame_key: str = ""


def vp8_data_offset(data: bytes, offset: int) -> tuple[bool, int]:
    """(starts partition 0, offset of the VP8 data) for a VP8 payload at ``offset``."""
    first = data[offset]
    start = bool(first & 0x10) and first & 0x07 == 0
    i = offset + 1
    if first & 0x80:
        ext = data[i]
        i += 1
        if ext & 0x80:
            i += 2 if data[i] & 0x80 else 1
        if ext & 0x40:
            i += 1
        if ext & 0x30:
            i += 1
    return start, i


class LightReceiver:
    """Counts what one peer connection receives; ``attach`` it after ``setRemoteDescription``."""

    def __init__(self, *, sample: bool = True) -> None:
        self.streams: dict[int, StreamCount] = {}
        self.kinds: dict[int, str] = {}
        self.other_packets = 0
        """RTP packets of payload types that are not media (RTX, padding probes)."""
        self._sample = sample
        self._samples: list[tuple[str, float]] = []

    def attach(self, pc: RTCPeerConnection) -> None:
        """Take over RTP from every transport of ``pc``; payload types from its remote SDP."""
        if pc.remoteDescription is not None:
            self.kinds = payload_kinds(pc.remoteDescription.sdp)
        transports = {id(t.receiver.transport): t.receiver.transport
                      for t in pc.getTransceivers() if t.receiver.transport is not None}
        for transport in transports.values():
            divert_rtp(transport, self.on_rtp)

    def on_rtp(self, data: bytes) -> None:
        if len(data) < 12:
            return
        kind = self.kinds.get(data[1] & 0x7F)
        ssrc = int.from_bytes(data[8:12], "big")
        offset = 12 + 4 * (data[0] & 0x0F)
        if data[0] & 0x10:
            offset += 4 + 4 * int.from_bytes(data[offset + 2:offset + 4], "big")
        end = len(data) - (data[-1] if data[0] & 0x20 else 0)
        if kind is None or end <= offset:
            self.other_packets += 1
            return
        stream = self.streams.get(ssrc)
        if stream is None:
            stream = self.streams[ssrc] = StreamCount(kind=kind)
        seq = int.from_bytes(data[2:4], "big")
        if stream.last_seq >= 0:
            step = (seq - stream.last_seq) & 0xFFFF
            if step == 0 or step >= 0x8000:
                return  # duplicate or late
            stream.lost += step - 1
        stream.last_seq = seq
        stream.packets += 1
        stream.bytes += end - offset
        if kind == "audio":
            stream.frames += 1
            stream.complete += 1
            return
        self._video(stream, data, offset, seq)

    def _video(self, stream: StreamCount, data: bytes, offset: int, seq: int) -> None:
        ts = int.from_bytes(data[4:8], "big")
        if ts != stream.frame_ts:
            stream.frame_ts, stream.frame_start, stream.frame_seen = ts, -1, 0
        stream.frame_seen += 1
        start, at = vp8_data_offset(data, offset)
        if start:
            stream.frame_start = seq
            stream.frame_key = data[at:at + KEY_BYTES].hex()
        if not data[1] & 0x80:
            return
        if stream.marker_ts >= 0:
            stream.ticks += (ts - stream.marker_ts) & 0xFFFFFFFF
        stream.marker_ts = ts
        stream.frames += 1
        if stream.frame_start < 0 or ((seq - stream.frame_start) & 0xFFFF) + 1 != \
                stream.frame_seen:
            return
        now = time.monotonic()
        stream.complete += 1
        if stream.first_complete_at is None:
            stream.first_complete_at = now
        if self._sample and len(self._samples) < SAMPLE_LIMIT:
            self._samples.append((stream.frame_key, now))

    def totals(self) -> dict[str, dict[str, int]]:
        """Sums by kind: packets, bytes, frames, complete, lost."""
        out: dict[str, dict[str, int]] = {}
        for stream in self.streams.values():
            sums = out.setdefault(stream.kind, dict.fromkeys(
                ("packets", "bytes", "frames", "complete", "lost"), 0))
            for name in sums:
                sums[name] += getattr(stream, name)
        return out

    def take_samples(self) -> list[tuple[str, float]]:
        """(frame key, arrival) of each complete video frame since the last call."""
        samples, self._samples = self._samples, []
        return samples


class SendLog:
    """When the publisher handed each frame to its sender, by ``frame_key``."""

    def __init__(self) -> None:
        self._sent: dict[str, list[float]] = {}

    def __call__(self, frame: bytes) -> None:
        self._sent.setdefault(frame_key(frame), []).append(time.monotonic())

    def latencies(self, samples: Iterable[tuple[str, float]], *,
                  horizon: float = 1.5) -> list[float]:
        """Arrival minus the latest send of the same frame before it (within ``horizon`` s)."""
        out = []
        for key, arrived in samples:
            sent = self._sent.get(key)
            if not sent:
                continue
            i = bisect.bisect_right(sent, arrived)
            if i and arrived - sent[i - 1] <= horizon:
                out.append(arrived - sent[i - 1])
        return out


def sum_totals(parts: Iterable[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """Add ``LightReceiver.totals()`` results together."""
    out: dict[str, dict[str, int]] = {}
    for part in parts:
        for kind, sums in part.items():
            mine = out.setdefault(kind, {})
            for name, value in sums.items():
                mine[name] = mine.get(name, 0) + value
    return out


def diff_totals(after: dict[str, dict[str, int]],
                before: dict[str, dict[str, int]]) -> dict[str, dict[str, Any]]:
    """``after - before``, kind by kind."""
    return {kind: {name: value - before.get(kind, {}).get(name, 0)
                   for name, value in sums.items()} for kind, sums in after.items()}
