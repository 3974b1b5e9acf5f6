"""Reading a publisher's simulcast offer and answering it (sfu/simulcast.py, sfu/sdp.py)."""

from __future__ import annotations

from sfu.simulcast import SimulcastOffer, answer_simulcast, read_simulcast

SECTION = """m=video 9 UDP/TLS/RTP/SAVPF 96 97
a=mid:1
a=sendonly
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
a=rtpmap:96 VP8/90000
a=rid:q send
a=rid:h send
a=rid:f send
a=simulcast:send q;h;f""".split("\n")


def test_a_chromium_simulcast_section_is_read_lowest_first() -> None:
    assert read_simulcast(SECTION) == SimulcastOffer(rids=("q", "h", "f"), rid_extension=10,
                                                     repaired_extension=11)


def test_without_the_rid_extension_or_with_one_encoding_there_is_no_simulcast() -> None:
    assert read_simulcast([line for line in SECTION if "rtp-stream-id" not in line]) is None
    one = [line for line in SECTION if not line.startswith("a=simulcast")]
    assert read_simulcast([*one, "a=simulcast:send q"]) is None


def test_paused_alternative_and_unknown_rids_are_left_out_and_at_most_three_taken() -> None:
    lines = [line for line in SECTION if not line.startswith("a=simulcast")]
    lines += ["a=rid:x send", "a=rid:bad!rid send",
              "a=simulcast:send ~x;q,h;h;bad!rid;f;x recv r"]
    assert read_simulcast(lines) == SimulcastOffer(rids=("q", "h", "f"), rid_extension=10,
                                                   repaired_extension=11)


def test_the_answer_receives_the_offered_encodings_in_their_section_only() -> None:
    answer = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
              "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=recvonly\r\n"
              "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\n")
    offer = SimulcastOffer(rids=("q", "h", "f"), rid_extension=10, repaired_extension=None)
    out = answer_simulcast(answer, {"1": offer})
    sections = out.split("m=")
    assert "a=rid" not in sections[1] and "a=rid" not in sections[3]
    assert sections[2].endswith("a=recvonly\r\na=rid:q recv\r\na=rid:h recv\r\na=rid:f recv\r\n"
                                "a=simulcast:recv q;h;f\r\n")
    assert answer_simulcast(answer, {}) == answer
    last = answer_simulcast(answer, {"2": offer})
    assert last.endswith("a=mid:2\r\na=rid:q recv\r\na=rid:h recv\r\na=rid:f recv\r\n"
                         "a=simulcast:recv q;h;f\r\n")
