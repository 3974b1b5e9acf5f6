"""Codec filtering and media-section facts on browser-like and real aiortc offers."""

from __future__ import annotations

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from sfu.errors import SfuCode, SfuError
from sfu.sdp import MAX_SDP_BYTES, MediaSection, filter_codecs, read_description

FB = ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]


def video_codec(pt: int, name: str, fmtp: str | None = None, rtx: int | None = None) -> list[str]:
    lines = [f"a=rtpmap:{pt} {name}/90000", *(f"a=rtcp-fb:{pt} {fb}" for fb in FB)]
    if fmtp:
        lines.append(f"a=fmtp:{pt} {fmtp}")
    if rtx is not None:
        lines += [f"a=rtpmap:{rtx} rtx/90000", f"a=fmtp:{rtx} apt={pt}"]
    return lines


CHROME_AUDIO = [
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:Xk2f",
    "a=ice-pwd:9b1kL7tTz2rQ3o0fQpH3ZkVg",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 5A:1C:9E:04:88:3B:7D:20:41:C5:AF:92:6E:00:13:7B:"
    "D4:2E:61:9A:30:5F:E8:77:C2:0B:4D:95:16:AA:3E:F1",
    "a=setup:actpass",
    "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=sendrecv",
    "a=msid:5c3e0a1b-stream 9f0d2c47-audio",
    "a=rtcp-mux",
    "a=rtcp-rsize",
    "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:63 red/48000/2",
    "a=fmtp:63 111/111",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:13 CN/8000",
    "a=rtpmap:110 telephone-event/48000",
    "a=rtpmap:126 telephone-event/8000",
    "a=ssrc:3735928559 cname:q0r1s2t3u4v5w6x7",
    "a=ssrc:3735928559 msid:5c3e0a1b-stream 9f0d2c47-audio",
]
CHROME_VIDEO = [
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101 102 103 45 46 112 113 114",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:Xk2f",
    "a=ice-pwd:9b1kL7tTz2rQ3o0fQpH3ZkVg",
    "a=ice-options:trickle",
    "a=setup:actpass",
    "a=mid:1",
    "a=extmap:14 urn:ietf:params:rtp-hdrext:toffset",
    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=extmap:13 urn:3gpp:video-orientation",
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    "a=sendonly",
    "a=msid:5c3e0a1b-stream 1e2d3c4b-video",
    "a=rtcp-mux",
    "a=rtcp-rsize",
    *video_codec(96, "VP8", rtx=97),
    *video_codec(98, "VP9", "profile-id=0", rtx=99),
    *video_codec(100, "VP9", "profile-id=2", rtx=101),
    *video_codec(102, "H264", "level-asymmetry-allowed=1;packetization-mode=1;"
                 "profile-level-id=42001f", rtx=103),
    *video_codec(45, "AV1", "level-idx=5;profile=0;tier=0", rtx=46),
    "a=rtpmap:112 red/90000",
    "a=rtpmap:113 rtx/90000",
    "a=fmtp:113 apt=112",
    "a=rtpmap:114 ulpfec/90000",
    "a=ssrc-group:FID 1111111111 2222222222",
    "a=ssrc:1111111111 cname:q0r1s2t3u4v5w6x7",
    "a=ssrc:2222222222 cname:q0r1s2t3u4v5w6x7",
]
CHROME_DATA = [
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "c=IN IP4 0.0.0.0",
    "a=ice-ufrag:Xk2f",
    "a=ice-pwd:9b1kL7tTz2rQ3o0fQpH3ZkVg",
    "a=ice-options:trickle",
    "a=setup:actpass",
    "a=mid:2",
    "a=sctp-port:5000",
    "a=max-message-size:262144",
]
BARE_SESSION = [
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1 2",
    "a=extmap-allow-mixed",
    "a=msid-semantic: WMS 5c3e0a1b-stream",
]
TRANSPORT = [line for line in CHROME_AUDIO if line.startswith(
    ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:", "a=setup:"))]
SESSION = BARE_SESSION + TRANSPORT
"""Session-level ICE credentials and DTLS fingerprint: every section inherits them."""
SESSION_TEXT = "\r\n".join(line for line in SESSION if not line.startswith("a=group:")) + "\r\n"


def media_sections(text: str) -> list[MediaSection]:
    return list(read_description(text, max_sections=12).sections)


def bundled(session: list[str], lines: list[str]) -> str:
    """``session`` then ``lines``, the BUNDLE group naming the mids the lines have."""
    mids = [ln[6:] for ln in lines if ln.startswith("a=mid:")]
    group = "a=group:BUNDLE " + " ".join(mids)
    return "\r\n".join([group if ln.startswith("a=group:BUNDLE") else ln for ln in session]
                       + lines) + "\r\n"


def sdp(*sections: list[str]) -> str:
    return bundled(SESSION, [line for s in sections for line in s])


CHROME_OFFER = sdp(CHROME_AUDIO, CHROME_VIDEO, CHROME_DATA)


def split(text: str) -> list[list[str]]:
    sections: list[list[str]] = [[]]
    for line in text.split("\r\n"):
        if line.startswith("m="):
            sections.append([])
        if line:
            sections[-1].append(line)
    return sections


def codec_pt(line: str) -> str | None:
    for prefix in ("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"):
        if line.startswith(prefix):
            return line[len(prefix):].split(" ")[0]
    return None


def assert_consistent(section: list[str]) -> None:
    """Every codec line names a listed payload type and every listed one has an rtpmap."""
    listed = section[0].split()[3:]
    mapped = [codec_pt(ln) for ln in section if ln.startswith("a=rtpmap:")]
    assert sorted(mapped) == sorted(listed)  # type: ignore[type-var]
    for line in section[1:]:
        pt = codec_pt(line)
        assert pt is None or pt == "*" or pt in listed, line


def test_chrome_offer_keeps_only_vp8_its_rtx_and_opus() -> None:
    out = filter_codecs(CHROME_OFFER)
    session, audio, video, data = split(out)
    assert audio[0] == "m=audio 9 UDP/TLS/RTP/SAVPF 111"
    assert video[0] == "m=video 9 UDP/TLS/RTP/SAVPF 96 97"
    for section in (audio, video):
        assert_consistent(section)
    assert [ln for ln in audio if codec_pt(ln)] == [
        "a=rtpmap:111 opus/48000/2", "a=rtcp-fb:111 transport-cc",
        "a=fmtp:111 minptime=10;useinbandfec=1"]
    assert "a=fmtp:97 apt=96" in video
    assert [ln for ln in video if ln.startswith("a=rtcp-fb:")] == [
        f"a=rtcp-fb:96 {fb}" for fb in FB]
    assert not any(name in out for name in ("VP9", "H264", "AV1", "red/", "ulpfec", "G722",
                                            "PCMU", "telephone-event"))
    assert session == SESSION
    assert data == CHROME_DATA


def test_filtering_preserves_every_other_line_in_order() -> None:
    out = filter_codecs(CHROME_OFFER)
    removed = {"63", "9", "0", "8", "13", "110", "126",
               "98", "99", "100", "101", "102", "103", "45", "46", "112", "113", "114"}
    expected = [ln for ln in CHROME_OFFER.split("\r\n")
                if ln and not ln.startswith("m=") and codec_pt(ln) not in removed]
    assert [ln for ln in out.split("\r\n") if ln and not ln.startswith("m=")] == expected
    assert out.endswith("\r\n") and "\n" not in out.replace("\r\n", "")


def test_filtering_is_idempotent_and_accepts_lf_line_endings() -> None:
    once = filter_codecs(CHROME_OFFER)
    assert filter_codecs(once) == once
    assert filter_codecs(CHROME_OFFER.replace("\r\n", "\n")) == once


def h264_only(direction: str, port: str = "9") -> list[str]:
    return [f"m=video {port} UDP/TLS/RTP/SAVPF 102 103", "a=mid:1", f"a={direction}",
            *video_codec(102, "H264", "packetization-mode=1", rtx=103)]


def test_sending_section_without_vp8_is_refused() -> None:
    for direction in ("sendonly", "sendrecv"):
        with pytest.raises(SfuError) as err:
            media_sections(sdp(CHROME_AUDIO, h264_only(direction)))
        assert err.value.code is SfuCode.NO_SUPPORTED_CODEC
        assert "vp8" in err.value.message


def test_receive_only_section_without_supported_codec_passes() -> None:
    for section in (h264_only("recvonly"), h264_only("inactive")):
        text = sdp(CHROME_AUDIO, section)
        assert split(filter_codecs(text))[2] == section
        assert split(read_description(text, max_sections=12).sdp)[2] == section


def test_port_zero_does_not_make_a_sending_section_inactive() -> None:
    """aiortc ignores the port: a port-0 sendonly section sends, so it needs a codec."""
    with pytest.raises(SfuError) as err:
        media_sections(sdp(CHROME_AUDIO, h264_only("sendonly", "0")))
    assert err.value.code is SfuCode.NO_SUPPORTED_CODEC


def test_audio_section_without_opus_is_refused() -> None:
    pcmu = ["m=audio 9 UDP/TLS/RTP/SAVPF 0", "a=mid:0", "a=sendonly", "a=rtpmap:0 PCMU/8000"]
    with pytest.raises(SfuError) as err:
        media_sections(sdp(pcmu))
    assert err.value.code is SfuCode.NO_SUPPORTED_CODEC


@pytest.mark.parametrize("text", [
    "",
    "hello world",
    "o=- 1 2 IN IP4 127.0.0.1\r\nv=0\r\n",
    " v=0\r\n" + "\r\n".join(CHROME_VIDEO),
    "v=0\r\n" + "a=x-padding:" + "x" * MAX_SDP_BYTES + "\r\n",
    None,
    b"v=0\r\n",
])
def test_garbage_empty_or_huge_sdp_is_invalid(text: object) -> None:
    for parse in (filter_codecs, media_sections):
        with pytest.raises(SfuError) as err:
            parse(text)  # type: ignore[arg-type]
        assert err.value.code is SfuCode.INVALID_SDP


@pytest.mark.parametrize("mline", ["m=", "m=video", "m=video 9", "m=audio 9 RTP/AVP"])
def test_truncated_m_line_is_invalid(mline: str) -> None:
    text = "\r\n".join([*SESSION, mline, "a=mid:0", "a=sendonly"]) + "\r\n"
    for parse in (filter_codecs, media_sections):
        with pytest.raises(SfuError) as err:
            parse(text)
        assert err.value.code is SfuCode.INVALID_SDP


def test_sdp_without_media_sections_has_nothing_to_parse() -> None:
    with pytest.raises(SfuError) as err:
        media_sections(sdp())
    assert err.value.code is SfuCode.INVALID_SDP


def test_media_sections_reads_kind_mid_direction_and_payload_types() -> None:
    """What aiortc reads in the filtered text: only forwarded payload types are left."""
    sections = media_sections(CHROME_OFFER)
    assert sections == [
        MediaSection(kind="audio", mid="0", direction="sendrecv", payload_types=(111,)),
        MediaSection(kind="video", mid="1", direction="sendonly", payload_types=(96, 97)),
        MediaSection(kind="application", mid="2", direction="", payload_types=()),
    ]
    assert [s.sending for s in sections] == [True, True, False]


def test_directions_are_read_as_aiortc_reads_them() -> None:
    """Port 0 and non-``a=`` lines do not change a direction: aiortc ignores both."""
    port_zero = ["m=video 0 UDP/TLS/RTP/SAVPF 96", "a=mid:3", "a=sendonly",
                 "a=rtpmap:96 VP8/90000"]
    x_inactive = ["m=video 9 UDP/TLS/RTP/SAVPF 96", "a=mid:4", "a=sendonly", "x=inactive",
                  "b=inactive", "a=rtpmap:96 VP8/90000"]
    recv = ["m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=recvonly", "a=rtpmap:111 opus/48000/2"]
    video, tricked, audio = media_sections(sdp(port_zero, x_inactive, recv))
    assert video.direction == "sendonly" and video.mid == "3" and video.sending
    assert tricked.direction == "sendonly" and tricked.sending
    assert audio.direction == "recvonly" and audio.mid is None and not audio.sending


async def test_filtered_aiortc_offer_is_accepted_by_another_aiortc_peer(
    loopback_ice: None,
) -> None:
    offerer, answerer = RTCPeerConnection(), RTCPeerConnection()
    try:
        offerer.addTransceiver("video")
        offerer.addTransceiver("audio")
        offerer.createDataChannel("chat")
        await offerer.setLocalDescription(await offerer.createOffer())
        original = offerer.localDescription.sdp
        assert "H264" in original and "PCMU" in original
        filtered = filter_codecs(original)
        assert "H264" not in filtered and "PCMU" not in filtered
        await answerer.setRemoteDescription(RTCSessionDescription(filtered, "offer"))
        await answerer.setLocalDescription(await answerer.createAnswer())
        answer = answerer.localDescription.sdp
        kinds = [s.kind for s in media_sections(answer)]
        assert kinds == ["video", "audio", "application"]
        rtpmaps = sorted(ln.split(" ", 1)[1] for ln in answer.splitlines()
                         if ln.startswith("a=rtpmap:"))
        assert rtpmaps == ["VP8/90000", "opus/48000/2", "rtx/90000"]
        await offerer.setRemoteDescription(answerer.localDescription)
        negotiated = [t._codecs for t in offerer.getTransceivers()]
        assert [[c.mimeType for c in codecs] for codecs in negotiated] == [
            ["video/VP8", "video/rtx"], ["audio/opus"]]
    finally:
        await offerer.close()
        await answerer.close()


def recvonly_sections(n: int) -> list[str]:
    return [line for i in range(n) for line in (
        "m=video 9 UDP/TLS/RTP/SAVPF 96", f"a=mid:r{i}", "a=recvonly", "a=rtpmap:96 VP8/90000")]


def test_too_many_m_lines_are_refused_before_any_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """~430 recvonly m-lines fit in 60 KB; they are counted in the text and refused."""
    text = sdp(CHROME_AUDIO, recvonly_sections(430))
    assert len(text) < MAX_SDP_BYTES
    parsed: list[str] = []
    monkeypatch.setattr("sfu.sdp.SessionDescription.parse", parsed.append)
    monkeypatch.setattr("sfu.sdp._split", lambda text: parsed.append(text))
    with pytest.raises(SfuError) as err:
        read_description(text, max_sections=12)
    assert err.value.code is SfuCode.TOO_MANY_TRACKS and "12" in err.value.message
    assert parsed == []


def test_m_line_cap_counts_every_kind_of_section() -> None:
    read_description(sdp(CHROME_AUDIO, recvonly_sections(11)), max_sections=12)
    with pytest.raises(SfuError) as err:
        read_description(sdp(CHROME_AUDIO, CHROME_DATA, recvonly_sections(11)),
                         max_sections=12)
    assert err.value.code is SfuCode.TOO_MANY_TRACKS


@pytest.mark.parametrize("extra", [
    [f"a=ssrc:{1000000000 + i} cname:x" for i in range(1500)],
    ["a=rtcp-fb:* nack"] * 2500,
    [f"a=candidate:{i} 1 udp 1 127.0.0.{1 + i % 250} {1000 + i} typ host" for i in range(40)],
    ["a=extmap:1 urn:x"] * 2500,
])
def test_huge_attribute_lists_are_invalid(extra: list[str]) -> None:
    text = sdp(CHROME_AUDIO[:-2] + extra + CHROME_AUDIO[-2:])
    assert len(text) < MAX_SDP_BYTES
    with pytest.raises(SfuError) as err:
        media_sections(text)
    assert err.value.code is SfuCode.INVALID_SDP


def test_many_payload_types_of_a_forwarded_codec_are_invalid() -> None:
    pts = list(range(96, 128)) + list(range(35, 64))
    video = [f"m=video 9 UDP/TLS/RTP/SAVPF {' '.join(map(str, pts))}", "a=mid:1",
             "a=sendonly", *(f"a=rtpmap:{pt} VP8/90000" for pt in pts)]
    with pytest.raises(SfuError) as err:
        media_sections(sdp(video))
    assert err.value.code is SfuCode.INVALID_SDP


def test_denied_candidate_lines_are_removed_before_aiortc_sees_them() -> None:
    lines = ["a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
             "a=candidate:2 1 udp 2130706431 169.254.169.254 80 typ host",
             "a=candidate:3 1 udp 2130706431 fe80::1 5000 typ host"]
    text = sdp(CHROME_AUDIO[:-2] + lines + CHROME_AUDIO[-2:])
    out = read_description(text, max_sections=12,
                           candidates=lambda host: host == "127.0.0.1").sdp
    assert "127.0.0.1 5000" in out
    assert "169.254.169.254" not in out and "fe80::1" not in out


@pytest.mark.parametrize("brk", ["\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85",
                                 "\u2028", "\u2029"])
def test_line_breaks_other_than_crlf_or_lf_are_invalid(brk: str) -> None:
    """aiortc splits lines at each of these (``str.splitlines``): an m-line behind one
    would be applied by aiortc without being counted or filtered by the SFU."""
    text = CHROME_OFFER.replace("\r\na=mid:1\r\n",
                                f"\r\na=mid:1{brk}m=video 9 UDP/TLS/RTP/SAVPF 102{brk}"
                                f"a=sendonly{brk}a=rtpmap:102 H264/90000\r\n")
    assert len(text.splitlines()) > len(CHROME_OFFER.splitlines())
    for parse in (filter_codecs, media_sections):
        with pytest.raises(SfuError) as err:
            parse(text)
        assert err.value.code is SfuCode.INVALID_SDP


@pytest.mark.parametrize(("line", "bad"), [
    ("a=rtpmap:111 opus/48000/2", "a=rtpmap:\u00b2 opus/48000/2"),  # isdigit(), int() fails
    ("a=rtpmap:111 opus/48000/2", "a=rtpmap:\u0661\u0661\u0661 opus/48000/2"),  # int() = 111
    ("a=fmtp:97 apt=96", "a=fmtp:97 apt=\u0669\u0666"),
    ("m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
     "m=audio 9 UDP/TLS/RTP/SAVPF \u0661\u0661\u0661 63 9 0 8 13 110 126"),
    ("a=rtcp-fb:96 nack", "a=rtcp-fb:\u00b9 nack"),
])
def test_payload_types_must_be_ascii_numbers(line: str, bad: str) -> None:
    text = CHROME_OFFER.replace(f"\r\n{line}\r\n", f"\r\n{bad}\r\n", 1)
    assert text != CHROME_OFFER
    for parse in (filter_codecs, media_sections):
        with pytest.raises(SfuError) as err:
            parse(text)
        assert err.value.code is SfuCode.INVALID_SDP


def test_payload_types_are_compared_as_numbers() -> None:
    """aiortc reads ``0111`` as 111: a leading zero must not keep H.264 in the section."""
    video = ["m=video 9 UDP/TLS/RTP/SAVPF 096 102", "a=mid:1", "a=sendonly",
             "a=rtpmap:96 VP8/90000", "a=rtpmap:102 H264/90000"]
    out = filter_codecs(sdp(video))
    assert "H264" not in out and "m=video 9 UDP/TLS/RTP/SAVPF 096\r\n" in out
    assert media_sections(sdp(video))[0].payload_types == (96,)


def transport_offer(session: list[str], media: list[str]) -> str:
    audio = [ln for ln in CHROME_AUDIO if ln not in TRANSPORT]
    return bundled([*BARE_SESSION, *session], [audio[0], *media, *audio[1:]])


@pytest.mark.parametrize("where", ["session", "media"])
def test_transport_parameters_may_be_session_or_media_level(where: str) -> None:
    text = transport_offer(TRANSPORT, []) if where == "session" \
        else transport_offer([], TRANSPORT)
    assert media_sections(text)[0].sending


@pytest.mark.parametrize("missing", ["a=fingerprint:", "a=setup:", "a=ice-ufrag:",
                                     "a=ice-pwd:"])
def test_offer_without_ice_credentials_or_dtls_fingerprint_is_invalid(missing: str) -> None:
    """aiortc accepts a description without a fingerprint (or a=setup), then asserts in
    its connect task; the SFU refuses it before aiortc sees it. Each section needs its
    own (media-level) or the session's."""
    kept = [ln for ln in TRANSPORT if not ln.startswith(missing)]
    second = [*(ln for ln in CHROME_VIDEO if not ln.startswith(missing)), *kept]
    for text in (transport_offer(kept, []), transport_offer([], kept),
                 bundled(BARE_SESSION, CHROME_AUDIO + second)):
        with pytest.raises(SfuError) as err:
            media_sections(text)
        assert err.value.code is SfuCode.INVALID_SDP
        assert missing[2:-1] in err.value.message


@pytest.mark.parametrize("change", [
    ("a=group:BUNDLE 0 1 2", "a=group:BUNDLE 0 1 2 7"),  # a mid no section has
    ("a=mid:1", "a=mid:0"),  # two sections with one mid
])
def test_bundle_of_unknown_mids_or_a_repeated_mid_is_invalid(change: tuple[str, str]) -> None:
    """aiortc bundles a section onto the transport of a mid no section has (none): its
    createAnswer and connect task then fail on the missing transport."""
    text = CHROME_OFFER.replace(f"\r\n{change[0]}\r\n", f"\r\n{change[1]}\r\n")
    assert text != CHROME_OFFER
    with pytest.raises(SfuError) as err:
        media_sections(text)
    assert err.value.code is SfuCode.INVALID_SDP


def test_a_forwarded_codec_named_only_outside_the_m_line_does_not_count() -> None:
    """An rtpmap for VP8 whose payload type the m-line does not list leaves only H.264."""
    sdp = (SESSION_TEXT + "m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\na=sendonly\r\n"
           "a=rtpmap:92 VP8/90000\r\na=rtpmap:102 H264/90000\r\n")
    with pytest.raises(SfuError) as info:
        read_description(sdp, max_sections=12)
    assert info.value.code is SfuCode.NO_SUPPORTED_CODEC


def test_a_payload_type_mapped_twice_is_invalid() -> None:
    sdp = (SESSION_TEXT + "m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=mid:0\r\na=sendonly\r\n"
           "a=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n"
           "a=rtpmap:111 telephone-event/48000\r\n")
    with pytest.raises(SfuError) as info:
        read_description(sdp, max_sections=12)
    assert info.value.code is SfuCode.INVALID_SDP
