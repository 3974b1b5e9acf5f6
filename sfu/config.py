"""The SFU section of the node's configuration."""

from __future__ import annotations

from dataclasses import dataclass, field

from sfu.bandwidth import BandwidthConfig


@dataclass(frozen=True, kw_only=True)
class SfuConfig:
    """Forwarding, key-frame and ICE settings; handed to every Router."""

    enabled: bool = True
    """Offer media connections. Off: a signalling-only node."""
    ice_addresses: tuple[str, ...] = ()
    """Host addresses ICE gathers on (e.g. ``127.0.0.1``); empty: every interface but loopback."""
    keyframe_interval: float = 0.5
    """At most one key-frame request (PLI) per publisher per this many seconds."""
    frame_wait: float = 0.3
    """Give up on an incomplete video frame after this long, ask for a key frame."""
    stall_timeout: float = 3.0
    """No RTP for this long marks a published track as stalled."""
    max_tracks_per_connection: int = 4
    """Media sections accepted in one publish offer."""
    active_speaker_interval: float = 0.5
    """Active-speaker updates are sent at most this often."""
    active_speaker_threshold: int = 50
    """Audio level (-dBov, 0 loudest … 127 silence) below which a speaker counts as active."""
    consumer_queue: int = 64
    """Frames queued per subscriber before it is resynchronised with a key frame."""
    bandwidth: BandwidthConfig = field(default_factory=BandwidthConfig)
    """Estimation and adaptation (the top-level ``bandwidth`` config section)."""
    transcode: bool = False
    """Benchmark baseline only: decode each track once and re-encode it for every
    subscriber (what aiortc's MediaRelay does) instead of forwarding."""
