"""Valid samples of everything the fuzzers mutate: the starting corpus of each target,
and the material of the protocol fuzzer (tests/fuzz).

Every address in these samples is loopback: the protocol fuzzer hands SDP and ICE
candidates to a real SFU, which must only ever talk to 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    pack_remb_fci,
)

# -- SDP --------------------------------------------------------------------
_ICE = ["c=IN IP4 0.0.0.0", "a=ice-ufrag:Xk2f", "a=ice-pwd:9b1kL7tTz2rQ3o0fQpH3ZkVg",
        "a=fingerprint:sha-256 5A:1C:9E:04:88:3B:7D:20:41:C5:AF:92:6E:00:13:7B:"
        "D4:2E:61:9A:30:5F:E8:77:C2:0B:4D:95:16:AA:3E:F1", "a=setup:actpass"]
_CANDIDATE = "a=candidate:1 1 udp 2122063615 127.0.0.1 34074 typ host"

OFFER_LINES = (
    "v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0",
    "a=group:BUNDLE 0 1", "a=msid-semantic: WMS s",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 110", *_ICE, "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level", "a=sendonly", "a=msid:s a",
    "a=rtcp-mux", "a=rtpmap:111 opus/48000/2", "a=rtcp-fb:111 transport-cc",
    "a=fmtp:111 minptime=10;useinbandfec=1", "a=rtpmap:63 red/48000/2", "a=fmtp:63 111/111",
    "a=rtpmap:9 G722/8000", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:110 telephone-event/48000", "a=ssrc:3735928559 cname:q0r1s2t3",
    _CANDIDATE, "a=end-of-candidates",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 45", *_ICE, "a=mid:1",
    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time", "a=sendonly",
    "a=msid:s v", "a=rtcp-mux", "a=rtpmap:96 VP8/90000", "a=rtcp-fb:96 goog-remb",
    "a=rtcp-fb:96 nack", "a=rtcp-fb:96 nack pli", "a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96",
    "a=rtpmap:102 H264/90000", "a=fmtp:102 packetization-mode=1;profile-level-id=42001f",
    "a=rtpmap:103 rtx/90000", "a=fmtp:103 apt=102", "a=rtpmap:45 AV1/90000",
    "a=ssrc-group:FID 1111111111 2222222222", "a=ssrc:1111111111 cname:q0r1s2t3",
    "a=ssrc:2222222222 cname:q0r1s2t3", _CANDIDATE, "a=end-of-candidates",
)
OFFER = "\r\n".join(OFFER_LINES) + "\r\n"
"""A browser-like publish offer: Opus and VP8 among codecs the SFU drops."""

ANSWER = "\r\n".join((
    "v=0", "o=- 1797614871 1797614871 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", *_ICE[:3],
    "a=fingerprint:sha-256 5A:1C:9E:04:88:3B:7D:20:41:C5:AF:92:6E:00:13:7B:"
    "D4:2E:61:9A:30:5F:E8:77:C2:0B:4D:95:16:AA:3E:F1", "a=setup:active", "a=mid:0",
    "a=sctp-port:5000", _CANDIDATE,
)) + "\r\n"
"""A subscriber answer that only accepts the data channel."""

CANDIDATE_LINE = "candidate:2045606459 1 udp 2122063615 127.0.0.1 34074 typ host generation 0"

# -- JWT --------------------------------------------------------------------
JWT_KEY, JWT_SECRET = "k1", "fuzz-secret-0123456789abcdef012345"
JWT_HEADER = '{"alg":"HS256","typ":"JWT"}'
JWT_CLAIMS = ('{"iss":"k1","sub":"alice","name":"Alice","exp":4102444800,"iat":1700000000,'
              '"jti":"j1","grants":{"room":"r1","role":"speaker","hidden":false}}')


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(header: bytes, claims: bytes, secret: str = JWT_SECRET) -> str:
    """A compact JWS over arbitrary header and claims bytes, HS256-signed."""
    signing_input = b64url(header) + "." + b64url(claims)
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(mac)


# -- RTCP -------------------------------------------------------------------
REPORT_SSRC = 0x11223344
"""The SSRC of the SFU's sender that the RTCP seeds report on."""


def rtcp_packets() -> list[bytes]:
    report = RtcpReceiverInfo(ssrc=REPORT_SSRC, fraction_lost=25, packets_lost=40,
                              highest_sequence=5000, jitter=120, lsr=0, dlsr=0)
    sender = RtcpSenderInfo(ntp_timestamp=1 << 40, rtp_timestamp=9000, packet_count=10,
                            octet_count=1000)
    return [
        bytes(RtcpRrPacket(ssrc=7, reports=[report])),
        bytes(RtcpSrPacket(ssrc=7, sender_info=sender, reports=[report])),
        bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=7, media_ssrc=0,
                             fci=pack_remb_fci(750_000, [REPORT_SSRC]))),
        bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=7, media_ssrc=REPORT_SSRC)),
        bytes(RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=7, media_ssrc=REPORT_SSRC,
                              lost=[100, 101, 117])),
        bytes(RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=7, items=[(1, b"cname")])])),
        bytes(RtcpByePacket(sources=[7])),
    ]


# -- the starting corpus of each target ----------------------------------------
EXAMPLES: dict[str, dict[str, object]] = {
    "join": {"token": "eyJ", "version": 1, "room": "r1", "media": False},
    "leave": {}, "ping": {},
    "update": {"name": "Alice L.", "metadata": "{\"hand_raised\":true}"},
    "offer": {"sdp": OFFER, "tracks": [{"mid": "0", "source": "microphone", "name": "Mic"}]},
    "answer": {"sdp": ANSWER},
    "candidate": {"target": "subscriber",
                  "candidate": {"candidate": CANDIDATE_LINE, "sdpMid": "0", "sdpMLineIndex": 0}},
    "subscription": {"track": "TR_3nVb8sKd1PqA", "state": "paused"},
    "mute-track": {"track": "TR_a8Ud1oMic2Xq", "muted": True},
    "remove-track": {"track": "TR_3nVb8sKd1PqA"},
    "data": {"topic": "chat", "payload": {"text": "hello"}, "to": ["bob"]},
    "request-to-speak": {"message": "I have a question"},
    "cancel-speaker-request": {},
    "approve-speaker": {"participant": "PA_Qe81LrZt0vYd", "reason": "go ahead"},
    "deny-speaker": {"participant": "PA_Qe81LrZt0vYd", "reason": "later, please"},
    "invite-to-stage": {"participant": "PA_Qe81LrZt0vYd", "message": "join us"},
    "respond-to-invite": {"accept": True},
    "move-to-audience": {"participant": "PA_Qe81LrZt0vYd", "reason": "time is up"},
    "remove-participant": {"participant": "PA_Qe81LrZt0vYd", "reason": "off-topic"},
    "update-participant": {"participant": "PA_Qe81LrZt0vYd", "name": "Bob (guest)"},
}
"""One example of every client message of docs/protocol.md (without ``type`` and ``id``)."""


def _vp8_seeds() -> list[bytes]:
    return [b"\x10\x00\x9d\x01\x2a", b"\x90\x80\x12\x00", b"\x90\xe0\x81\x23\x05\x40\x00",
            b"\x80\xf0\x81\x23\x05\xc0\x01", b"\x00\x01"]


def _frames_seeds() -> list[bytes]:
    # flags byte, then records of (seq delta, flags, length, payload)
    key = b"\x10\x00\x9d\x01\x2a"
    return [b"\x01" + b"\x01\x01\x05" + key + b"\x01\x03\x02\x00\x07",
            b"\x00" + b"\x01\x01\x05" + key + b"\x03\x01\x05" + key]


def corpus() -> dict[str, list[bytes]]:
    """Seed inputs per target name (fuzz/targets.py documents each input format)."""
    messages = [json.dumps({"type": t, "id": str(i), **body}).encode()
                for i, (t, body) in enumerate(EXAMPLES.items())]
    return {
        "message": messages,
        "sdp": [OFFER.encode(), ANSWER.encode(), b"v=0\r\nm=audio 9 RTP/AVP 111\r\n"],
        "jwt": [b"\x00" + sign_jwt(JWT_HEADER.encode(), JWT_CLAIMS.encode()).encode(),
                b"\x03" + JWT_HEADER.encode() + b"\n" + JWT_CLAIMS.encode() + b"\n"],
        "vp8": _vp8_seeds(),
        "vp8_frames": _frames_seeds(),
        "rtcp": [b"\x00" + p for p in rtcp_packets()] + [b"\x01" + b"".join(rtcp_packets())],
        "send_loop": [b"\x01\xff\xfe" + bytes(range(256)) * 12, b"\x00\x00\x07" + bytes(160),
                      b"\x01\x00\x00\x10"],
        "candidate": [b"\x00" + CANDIDATE_LINE.encode(),
                      b"\x01" + CANDIDATE_LINE.replace("host", "srflx raddr 127.0.0.1 rport 9")
                      .encode()],
    }


_SEPARATORS = [b"\r", b"\n", b"\r\n", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e",
               "\x85".encode(), "\u2028".encode(), "\u2029".encode()]
"""Everything some line splitter breaks lines at."""

DICTIONARIES: dict[str, list[bytes]] = {
    "message": [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-0.0", b"1e-400",
                b"18446744073709551616", b"\\ud800", b"\\udfff", b"\\u0000", b"null", b"true",
                b"false", b"[[[[[[[[[[[[[[[[", b"]]]]]]]]", b'"type":', b'"id":', b'"payload":',
                b'"to":', b'"tracks":', b'"candidate":', b'"sdp":', b'"metadata":',
                *(f'"{t}"'.encode() for t in EXAMPLES)],
    "sdp": [*_SEPARATORS, b"m=video 9 UDP/TLS/RTP/SAVPF 102", b"m=audio 9 UDP/TLS/RTP/SAVPF 0",
            b"m=application 9 UDP/DTLS/SCTP webrtc-datachannel", b"a=rtpmap:", b"a=fmtp:",
            b"a=rtcp-fb:", b"H264/90000", b"VP8/90000", b"opus/48000/2", b"PCMU/8000",
            b"rtx/90000", b"apt=", b"a=mid:", b"a=sendonly", b"a=sendrecv", b"a=inactive",
            b"a=recvonly", b" 0 ", "\u0663".encode(), "\u00b2".encode()],
    "jwt": [b'"alg":', b'"HS256"', b'"none"', b'"HS512"', b'"exp":', b'"nbf":', b'"iat":',
            b'"iss":', b'"sub":', b'"jti":', b'"k1"', b'"grants":', b'"room":', b'"role":',
            b'"moderator"', b'"hidden":', b'"room_join":', b"1e999", b"NaN",
            b"1" + b"0" * 400, b"-1", b"4102444800", b"null", b"[]", b"{}"],
    "candidate": [b"candidate:", b" typ ", b"host", b"srflx", b"relay", b"prflx", b" udp ",
                  b" tcp ", b" tcptype ", b"passive", b" raddr ", b" rport ", b" generation ",
                  b".local", b"127.0.0.1", b"::1", b"65536", b"-1"],
}
"""libFuzzer dictionaries: tokens the fuzzer would take long to guess."""
