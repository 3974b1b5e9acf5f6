"""Simulcast in SDP: what a publisher offers (RFC 8853 ``a=simulcast``, RFC 8851 ``a=rid``)
and what the SFU answers. Text only, no I/O and no aiortc.

A publisher sending RID-based simulcast (Chromium, Firefox) offers, in one video
section::

    a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
    a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
    a=rid:q send
    a=rid:h send
    a=rid:f send
    a=simulcast:send q;h;f

and sends each encoding on its own SSRC, tagged with its RID (RTX packets with
the repaired RID) until the SFU's receiver reports acknowledge the SSRC. The SFU
answers ``a=rid:<rid> recv`` for each encoding it takes and ``a=simulcast:recv``
with the same list. Encodings are layers, lowest first in the order the offer
lists them (the meeting page lists ``q;h;f``, a quarter, half and full size).
aiortc ignores every one of these lines: sfu/hooks_simulcast.py does the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
MAX_LAYERS = 3
"""Encodings taken from one section; more are left out of the answer (not sent)."""

_RID = re.compile("[A-Za-z0-9_-]{1,16}")
_EXTMAP = re.compile(r"a=extmap:([0-9]{1,2})(?:/[a-z]+)? (\S+)")


@dataclass(frozen=True, kw_only=True)
class SimulcastOffer:
    """The simulcast a sending video section offers."""

    rids: tuple[str, ...]
    """The encodings the SFU takes, lowest first (at most :data:`MAX_LAYERS`)."""
    rid_extension: int
    """Header extension id of ``sdes:rtp-stream-id`` in the offer."""
    repaired_extension: int | None
    """Header extension id of ``sdes:repaired-rtp-stream-id``; None when not offered."""


def read_simulcast(section: list[str]) -> SimulcastOffer | None:
    """The simulcast of one offered media section (its lines, ``m=`` first); None when it
    offers none, or offers it without the RID header extension (nothing could tell the
    encodings apart) or with fewer than two usable RIDs."""
    sending: list[str] = []
    listed: list[str] = []
    extensions: dict[str, int] = {}
    for line in section[1:]:
        if line.startswith("a=rid:"):
            parts = line[6:].split()
            if len(parts) >= 2 and parts[1] == "send" and _RID.fullmatch(parts[0]):
                sending.append(parts[0])
        elif line.startswith("a=simulcast:"):
            listed = _simulcast_send_list(line[len("a=simulcast:"):])
        elif line.startswith("a=extmap:"):
            match = _EXTMAP.fullmatch(line.strip())
            if match is not None:
                extensions[match.group(2)] = int(match.group(1))
    rids = tuple(dict.fromkeys(r for r in listed if r in sending))[:MAX_LAYERS]
    if len(rids) < 2 or RID_URI not in extensions:
        return None
    return SimulcastOffer(rids=rids, rid_extension=extensions[RID_URI],
                          repaired_extension=extensions.get(REPAIRED_RID_URI))


def _simulcast_send_list(value: str) -> list[str]:
    """RIDs of the ``send`` direction, first alternative of each stream, paused ones
    (``~rid``) left out."""
    tokens = value.split()
    for direction, streams in zip(tokens[::2], tokens[1::2], strict=False):
        if direction != "send":
            continue
        out = []
        for stream in streams.split(";"):
            first = stream.split(",", 1)[0]
            if first and not first.startswith("~") and _RID.fullmatch(first):
                out.append(first)
        return out
    return []


def answer_simulcast(sdp: str, offers: dict[str, SimulcastOffer]) -> str:
    """Add ``a=rid:<rid> recv`` and ``a=simulcast:recv`` to the answer's sections whose
    mid took a simulcast offer (``offers``: by mid)."""
    if not offers:
        return sdp
    lines = sdp.replace("\r\n", "\n").rstrip("\n").split("\n")
    out: list[str] = []
    pending: SimulcastOffer | None = None
    for line in lines:
        if line.startswith("m=") and pending is not None:
            out.extend(_recv_lines(pending))
            pending = None
        out.append(line)
        if line.startswith("a=mid:"):
            pending = offers.get(line[len("a=mid:"):].strip())
    if pending is not None:
        out.extend(_recv_lines(pending))
    return "\r\n".join(out) + "\r\n"


def _recv_lines(offer: SimulcastOffer) -> list[str]:
    return [*(f"a=rid:{rid} recv" for rid in offer.rids),
            "a=simulcast:recv " + ";".join(offer.rids)]
