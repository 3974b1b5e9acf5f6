"""The SFU section of the node's configuration."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import cached_property

from sfu.bandwidth import BandwidthConfig
from sfu.candidates import DEFAULT_DENY, CandidateFilter


@dataclass(frozen=True, kw_only=True)
class SfuConfig:
    """Forwarding, key-frame and ICE settings; handed to every Router."""

    enabled: bool = True
    """Offer media connections. Off: a signalling-only node."""
    ice_addresses: tuple[str, ...] = ()
    """Host addresses ICE gathers on (e.g. ``127.0.0.1``); empty: every interface but loopback."""
    udp_port: int = 0
    """One UDP port shared by every media connection of the node (bound on the first of
    ``ice_addresses``, else on every IPv4 interface); 0: a fresh ephemeral port per connection."""
    announced_address: str = ""
    """IP address put into host candidates instead of the local one (the public address
    of a 1:1 NAT, a Kubernetes node's address); empty: the local address."""
    keyframe_interval: float = 0.5
    """At most one key-frame request (PLI) per publisher per this many seconds."""
    frame_wait: float = 0.3
    """Give up on an incomplete video frame after this long, ask for a key frame."""
    stall_timeout: float = 3.0
    """No RTP for this long marks a published track as stalled."""
    max_tracks_per_connection: int = 4
    """Sending media sections accepted in one publish offer. A description may hold
    at most three times as many m-lines in all (:attr:`max_media_sections`)."""
    candidate_allow: tuple[str, ...] = ()
    """Networks (CIDR) remote ICE candidates must be in; empty: any not denied."""
    candidate_deny: tuple[str, ...] = DEFAULT_DENY
    """Networks remote ICE candidates are dropped from (link-local, with the cloud
    metadata address; unspecified; multicast)."""
    active_speaker_interval: float = 0.5
    """Active-speaker updates are sent at most this often."""
    active_speaker_threshold: int = 50
    """Audio level (-dBov, 0 loudest … 127 silence) below which a speaker counts as active."""
    consent_timeout: float = 30.0
    """ICE consent (RFC 7675): a media connection whose client has answered no consent
    check for this many seconds is closed, the client told (``connection-failed``)."""
    consumer_queue: int = 64
    """Frames queued per subscriber before it is resynchronised with a key frame."""
    bandwidth: BandwidthConfig = field(default_factory=BandwidthConfig)
    """Estimation and adaptation (the top-level ``bandwidth`` config section)."""
    fast_path: bool = True
    """Send forwarded media with the SFU's own per-producer fan-out (sfu/fastpath.py: each
    frame cut once, RTP headers from a per-subscriber template, sent at once). Off:
    aiortc's sender, one task per subscriber (kept as the benchmark's comparison)."""
    native_loop: bool = True
    """With :attr:`fast_path`: write, protect and record each frame's packets in the compiled
    loop (sfu/_rtploop.c) when it was built at install. Off, or not built: the same loop
    in Python (slower per packet)."""
    transcode: bool = False
    """Benchmark baseline only: decode each track once and re-encode it for every
    subscriber (what aiortc's MediaRelay does) instead of forwarding."""

    @property
    def max_media_sections(self) -> int:
        """m-lines accepted in one description: three per allowed track."""
        return 3 * self.max_tracks_per_connection

    @cached_property
    def candidate_filter(self) -> CandidateFilter:
        return CandidateFilter.of(self.candidate_allow, self.candidate_deny)

    def check(self) -> None:
        """Raise ValueError naming the first unusable setting."""
        if not 0 <= self.udp_port <= 65535:
            raise ValueError("udp_port: 0-65535")
        if self.consent_timeout < 1:
            raise ValueError("consent_timeout: at least 1 second")
        if self.max_tracks_per_connection < 1:
            raise ValueError("max_tracks_per_connection: at least 1")
        CandidateFilter.of(self.candidate_allow, self.candidate_deny)
        if self.announced_address:
            try:
                ipaddress.ip_address(self.announced_address)
            except ValueError as exc:
                raise ValueError(f"announced_address: not an IP address ({exc})") from exc
