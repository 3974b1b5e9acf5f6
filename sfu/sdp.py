"""Just enough SDP reading and rewriting for the SFU: limits, codec and candidate filtering.

A client's description goes through :func:`read_description` before aiortc sees
it. In order, each step bounded by the previous one:

1. cheap checks on the raw text: size, ``v=0``, line breaks (CRLF or LF only:
   aiortc splits lines with ``str.splitlines``, which also breaks at a lone CR,
   ``\\x0b``, ``\\x0c``, ``\\x1c``-``\\x1e``, ``\\x85``, U+2028 and U+2029, so a line
   hidden behind one of those would escape the SFU's own split), and the number
   of ``m=`` lines (counted in the text, before anything is split or parsed);
2. one linear rewrite: unsupported codecs removed, remote candidates the
   node's filter denies removed, per-section line limits enforced;
3. aiortc's own parser (``aiortc.sdp.SessionDescription.parse``) on the
   rewritten text. Directions, kinds and mids come from that parse only, and
   the same text is what the peer connection is given, so the SFU's checks
   and aiortc's behaviour cannot disagree about which sections send;
4. transport parameters aiortc only checks (by ``assert``) deep in its connect
   task: every section needs ICE credentials, ``a=setup`` and a DTLS fingerprint
   (session- or media-level); mids are unique and a BUNDLE group names only mids
   of the description's sections (aiortc bundles a section onto the transport of
   a mid no section has, leaving it without one).

Numbers (payload types) are read as ASCII digits only: ``"²".isdigit()`` is
true but ``int("²")`` raises, and ``int`` reads Arabic-Indic digits as numbers, so
``str.isdigit`` or a bare ``int`` would let the SFU and aiortc read different
payload types.

The limits keep aiortc's parser, whose cost grows with the square of some
attribute counts, in the millisecond range for any text under
:data:`MAX_SDP_BYTES`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from aiortc.sdp import SessionDescription

from sfu.errors import SfuCode, SfuError
from sfu.simulcast import SimulcastOffer, read_simulcast

log = logging.getLogger("parley.sfu.sdp")

FORWARDED = {"audio": ("opus",), "video": ("vp8",)}
"""Codecs the SFU forwards, by kind; everything else is removed from offers."""

MAX_SDP_BYTES = 60000
MAX_SESSION_LINES = 64
"""Lines before the first ``m=`` line."""
MAX_SECTION_LINES = 200
"""Lines of one media section after codec filtering (a filtered browser section has ~40)."""
MAX_PAYLOAD_TYPES = 32
"""Payload types listed on one m-line after codec filtering."""
MAX_CANDIDATES = 32
"""``a=candidate`` lines kept in one media section."""

_CODEC_PREFIXES = ("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")
_OTHER_BREAKS = re.compile("\r(?!\n)|[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
"""Line breaks of ``str.splitlines`` (aiortc's split) other than CRLF and LF."""
_PAYLOAD_TYPE = re.compile("[0-9]{1,3}")
"""ASCII digits only (``re`` with a str pattern: ``[0-9]`` is not ``\\d``)."""


@dataclass(frozen=True, kw_only=True)
class MediaSection:
    """One m-line as aiortc reads it."""

    kind: str
    """``audio``, ``video``, ``application`` …"""
    mid: str | None
    direction: str
    """The section's direction attribute; empty when it names none."""
    payload_types: tuple[int, ...]
    simulcast: SimulcastOffer | None = None
    """RID-based simulcast the section offers (sending video sections only)."""

    @property
    def sending(self) -> bool:
        """The offerer sends media in this section (aiortc will produce a track for it)."""
        return self.kind in FORWARDED and self.direction in ("sendonly", "sendrecv")


@dataclass(frozen=True, kw_only=True)
class Description:
    """A checked description: the text to hand to aiortc and what aiortc reads in it."""

    sdp: str
    """Rewritten text (codecs and candidates filtered); give exactly this to aiortc."""
    sections: tuple[MediaSection, ...]

    @property
    def sending(self) -> tuple[MediaSection, ...]:
        return tuple(s for s in self.sections if s.sending)


CandidateCheck = Callable[[str], bool]
"""Whether a remote candidate's connection address (IP or mDNS name) may be used."""


_UFRAG = re.compile(r"^a=ice-ufrag:(\S+)", re.MULTILINE)


def ice_ufrag(sdp: str) -> str | None:
    """The first ``a=ice-ufrag`` of a description (with max-bundle, the connection's)."""
    match = _UFRAG.search(sdp)
    return match.group(1) if match else None


def count_media_sections(sdp: str) -> int:
    """``m=`` lines in the text, counted without splitting it."""
    return sdp.count("\nm=") + (1 if sdp.startswith("m=") else 0)


def _check(sdp: str, max_sections: int | None = None) -> None:
    if not isinstance(sdp, str) or len(sdp) > MAX_SDP_BYTES:
        raise SfuError(SfuCode.INVALID_SDP, "SDP missing or too large")
    if not sdp.startswith("v=0"):
        raise SfuError(SfuCode.INVALID_SDP, "SDP must start with v=0")
    if _OTHER_BREAKS.search(sdp):
        raise SfuError(SfuCode.INVALID_SDP, "SDP has line breaks other than CRLF or LF")
    if max_sections is not None and count_media_sections(sdp) > max_sections:
        raise SfuError(SfuCode.TOO_MANY_TRACKS,
                       f"at most {max_sections} media sections in one description")


def _split(sdp: str) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line]
    session: list[str] = []
    sections: list[list[str]] = []
    for line in lines:
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            session.append(line)
    return session, sections


def _mline(line: str) -> list[str]:
    parts = line[2:].split()
    if len(parts) < 4:
        raise SfuError(SfuCode.INVALID_SDP, f"bad m-line {line[:80]!r}")
    return parts


def _payload_type(token: str, line: str) -> int:
    if not _PAYLOAD_TYPE.fullmatch(token):
        raise SfuError(SfuCode.INVALID_SDP, f"bad payload type in {line[:80]!r}")
    return int(token)


def _codec_pt(line: str) -> int | None:
    """The payload type a codec line names; None for ``a=rtcp-fb:*``."""
    token = line.split(":", 1)[1].split(" ", 1)[0]
    if token == "*" and line.startswith("a=rtcp-fb:"):
        return None
    return _payload_type(token, line)


def _codecs(section: list[str]) -> tuple[dict[int, str], dict[int, int]]:
    """An audio/video section's codec names and RTX ``apt`` by payload type; refuses
    payload types (m-line, codec lines, ``apt``) that are not ASCII numbers."""
    for token in _mline(section[0])[3:]:
        _payload_type(token, section[0])
    names: dict[int, str] = {}
    apt: dict[int, int] = {}
    for line in section[1:]:
        if not line.startswith(_CODEC_PREFIXES):
            continue
        pt = _codec_pt(line)
        if pt is None:
            continue
        rest = line.split(" ", 1)[1] if " " in line else ""
        if line.startswith("a=rtpmap:"):
            if pt in names:  # two codecs for one payload type: who would decide which?
                raise SfuError(SfuCode.INVALID_SDP, f"payload type {pt} is mapped twice")
            names[pt] = rest.split("/", 1)[0].lower()
        elif line.startswith("a=fmtp:"):
            for param in rest.split(";"):
                key, _, value = param.strip().partition("=")
                if key == "apt":
                    apt[pt] = _payload_type(value, line)
    return names, apt


def _filter_section(section: list[str]) -> list[str]:
    """Keep only forwarded codecs (and their RTX); a section left with none is kept whole."""
    parts = _mline(section[0])
    kind = parts[0]
    if kind not in FORWARDED:
        return section
    names, apt = _codecs(section)
    keep = {pt for pt, name in names.items() if name in FORWARDED[kind]}
    keep |= {pt for pt, name in names.items() if name == "rtx" and apt.get(pt) in keep}
    fmt = [p for p in parts[3:] if int(p) in keep]
    if not fmt:
        return section  # aiortc decides below whether it sends (then: no_supported_codec)
    out = [" ".join(["m=" + kind, parts[1], parts[2], *fmt])]
    for line in section[1:]:
        if line.startswith(_CODEC_PREFIXES):
            pt = _codec_pt(line)
            if pt is not None and pt not in keep:
                continue
        out.append(line)
    return out


def _filter_candidates(section: list[str], allowed: CandidateCheck | None) -> list[str]:
    out: list[str] = []
    kept = 0
    for line in section:
        if line.startswith("a=candidate:"):
            bits = line.split()
            if len(bits) < 6:
                raise SfuError(SfuCode.INVALID_SDP, f"bad candidate line {line[:80]!r}")
            if allowed is not None and not allowed(bits[4]):
                log.debug("remote candidate dropped by the filter", extra={"address": bits[4]})
                continue
            kept += 1
            if kept > MAX_CANDIDATES:
                raise SfuError(SfuCode.INVALID_SDP,
                               f"at most {MAX_CANDIDATES} candidates per media section")
        out.append(line)
    return out


def _limit(section: list[str]) -> None:
    if len(section) > MAX_SECTION_LINES:
        raise SfuError(SfuCode.INVALID_SDP,
                       f"at most {MAX_SECTION_LINES} lines per media section")
    if len(section[0].split()) - 3 > MAX_PAYLOAD_TYPES:
        raise SfuError(SfuCode.INVALID_SDP,
                       f"at most {MAX_PAYLOAD_TYPES} payload types per media section")


def _rewrite(sdp: str, *, codecs: bool, allowed: CandidateCheck | None) -> str:
    session, sections = _split(sdp)
    if len(session) > MAX_SESSION_LINES:
        raise SfuError(SfuCode.INVALID_SDP, f"at most {MAX_SESSION_LINES} session lines")
    out = list(session)
    for section in sections:
        if codecs:
            section = _filter_section(section)
        elif _mline(section[0])[0] in FORWARDED:
            _codecs(section)
        section = _filter_candidates(section, allowed)
        _limit(section)
        out.extend(section)
    return "\r\n".join(out) + "\r\n"


def filter_codecs(sdp: str) -> str:
    """Keep only forwarded codecs (and their RTX) in each audio/video section.

    A section left with no forwarded codec is kept as it is; whether that is
    acceptable depends on its direction, which :func:`read_description` decides.
    """
    _check(sdp)
    return _rewrite(sdp, codecs=True, allowed=None)


def _parse(sdp: str) -> SessionDescription:
    try:
        return SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser asserts, and raises Value/Key/Index errors
        raise SfuError(SfuCode.INVALID_SDP, f"cannot parse SDP: {exc!r}"[:200]) from exc


def _check_transport(parsed: SessionDescription) -> None:
    """ICE credentials, ``a=setup`` and a DTLS fingerprint in every section (aiortc reads
    session-level ones into each section), unique mids, BUNDLE naming only those mids.
    aiortc refuses missing ICE credentials itself but accepts the rest and only fails
    later (its connect task, or ``createAnswer``)."""
    for media in parsed.media:
        if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
            raise SfuError(SfuCode.INVALID_SDP,
                           f"{media.kind} section needs a=ice-ufrag and a=ice-pwd")
        if media.dtls is None or not media.dtls.fingerprints:
            raise SfuError(SfuCode.INVALID_SDP,
                           f"{media.kind} section needs a=setup and a=fingerprint")
    mids = [m.rtp.muxId for m in parsed.media if m.rtp.muxId]
    if len(set(mids)) != len(mids):
        raise SfuError(SfuCode.INVALID_SDP, "two media sections have the same a=mid")
    for group in parsed.group:
        if group.semantic == "BUNDLE" and not set(group.items) <= set(mids):
            raise SfuError(SfuCode.INVALID_SDP, "a=group:BUNDLE names a mid no section has")


def read_description(sdp: str, *, max_sections: int, codecs: bool = True,
                     candidates: CandidateCheck | None = None) -> Description:
    """Check, rewrite and parse a client's description (see the module docstring).

    ``codecs``: filter codecs (offers); ``candidates``: keep only the remote
    candidates it allows. Raises :class:`SfuError`: ``too_many_tracks`` for more
    than ``max_sections`` m-lines, ``invalid_sdp``, or ``no_supported_codec`` when
    a sending section has no codec the SFU forwards.
    """
    _check(sdp, max_sections)
    text = _rewrite(sdp, codecs=codecs, allowed=candidates)
    parsed = _parse(text)
    _check_transport(parsed)
    sections = []
    raw_sections = _split(text)[1]
    for media, raw in zip(parsed.media, raw_sections, strict=True):
        fmt = tuple(p for p in media.fmt if isinstance(p, int))
        section = MediaSection(kind=media.kind, mid=media.rtp.muxId or None,
                               direction=media.direction or "", payload_types=fmt)
        if section.sending and media.kind == "video":
            section = dataclasses.replace(section, simulcast=read_simulcast(raw))
        if codecs and section.sending and not any(
                c.mimeType.split("/")[-1].lower() in FORWARDED[media.kind]
                and c.payloadType in fmt for c in media.rtp.codecs):
            raise SfuError(SfuCode.NO_SUPPORTED_CODEC,
                           f"no {media.kind} codec the SFU forwards "
                           f"({', '.join(FORWARDED[media.kind])}) in the offer")
        sections.append(section)
    if not sections:
        raise SfuError(SfuCode.INVALID_SDP, "SDP has no media sections")
    return Description(sdp=text, sections=tuple(sections))
