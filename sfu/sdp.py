"""Just enough SDP reading and rewriting for the SFU: codec filtering and m-line facts."""

from __future__ import annotations

from dataclasses import dataclass

from sfu.errors import SfuCode, SfuError

FORWARDED = {"audio": ("opus",), "video": ("vp8",)}
"""Codecs the SFU forwards, by kind; everything else is removed from offers."""

MAX_SDP_BYTES = 60000


@dataclass(frozen=True, kw_only=True)
class MediaSection:
    kind: str
    mid: str | None
    direction: str
    payload_types: tuple[int, ...]

    @property
    def sending(self) -> bool:
        """The offerer sends media in this section."""
        return self.kind in FORWARDED and self.direction in ("sendonly", "sendrecv")


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


def _check(sdp: str) -> None:
    if not isinstance(sdp, str) or len(sdp) > MAX_SDP_BYTES:
        raise SfuError(SfuCode.INVALID_SDP, "SDP missing or too large")
    if not sdp.startswith("v=0"):
        raise SfuError(SfuCode.INVALID_SDP, "SDP must start with v=0")


def media_sections(sdp: str) -> list[MediaSection]:
    _check(sdp)
    out = []
    for section in _split(sdp)[1]:
        parts = section[0][2:].split()
        if len(parts) < 4:
            raise SfuError(SfuCode.INVALID_SDP, f"bad m-line {section[0][:80]!r}")
        mid = None
        direction = "sendrecv"
        for line in section[1:]:
            if line.startswith("a=mid:"):
                mid = line[6:].strip()
            elif line[2:] in ("sendrecv", "sendonly", "recvonly", "inactive"):
                direction = line[2:]
        try:
            pts = tuple(int(p) for p in parts[3:]) if parts[0] != "application" else ()
        except ValueError as exc:
            raise SfuError(SfuCode.INVALID_SDP, f"bad payload types in {section[0][:80]!r}") \
                from exc
        if parts[1] == "0":
            direction = "inactive"
        out.append(MediaSection(kind=parts[0], mid=mid, direction=direction,
                                payload_types=pts))
    if not out:
        raise SfuError(SfuCode.INVALID_SDP, "SDP has no media sections")
    return out


def filter_codecs(sdp: str) -> str:
    """Keep only forwarded codecs (and their RTX) in each audio/video section.

    A sending section left with no codec makes the whole offer fail with
    ``no_supported_codec``.
    """
    _check(sdp)
    session, sections = _split(sdp)
    out = list(session)
    for section in sections:
        parts = section[0][2:].split()
        if len(parts) < 4:
            raise SfuError(SfuCode.INVALID_SDP, f"bad m-line {section[0][:80]!r}")
        kind = parts[0]
        if kind not in FORWARDED:
            out.extend(section)
            continue
        names: dict[int, str] = {}
        apt: dict[int, int] = {}
        for line in section[1:]:
            if line.startswith("a=rtpmap:"):
                pt, _, rest = line[9:].partition(" ")
                if pt.isdigit():
                    names[int(pt)] = rest.split("/")[0].lower()
            elif line.startswith("a=fmtp:"):
                pt, _, rest = line[7:].partition(" ")
                for param in rest.split(";"):
                    key, _, value = param.strip().partition("=")
                    if key == "apt" and pt.isdigit() and value.isdigit():
                        apt[int(pt)] = int(value)
        keep = {pt for pt, name in names.items() if name in FORWARDED[kind]}
        keep |= {pt for pt, name in names.items() if name == "rtx" and apt.get(pt) in keep}
        section_fmt = [p for p in parts[3:] if p.isdigit() and int(p) in keep]
        direction = next((ln[2:] for ln in section[1:]
                          if ln[2:] in ("sendrecv", "sendonly", "recvonly", "inactive")),
                         "sendrecv")
        if not section_fmt:
            if direction in ("sendonly", "sendrecv") and parts[1] != "0":
                raise SfuError(SfuCode.NO_SUPPORTED_CODEC,
                               f"no {kind} codec the SFU forwards "
                               f"({', '.join(FORWARDED[kind])}) in the offer")
            out.extend(section)
            continue
        out.append(" ".join(["m=" + kind, parts[1], parts[2], *section_fmt]))
        for line in section[1:]:
            for prefix in ("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"):
                if line.startswith(prefix):
                    pt = line[len(prefix):].split(" ")[0]
                    if pt.isdigit() and int(pt) not in keep:
                        break
            else:
                out.append(line)
    return "\r\n".join(out) + "\r\n"
