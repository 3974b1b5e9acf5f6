"""The VP8 payload descriptor (RFC 7741) as the SFU reads it: start of frame, TID, length."""

from __future__ import annotations

import pytest
from aiortc.codecs.vpx import VpxPayloadDescriptor, vp8_depayload

from sfu.vp8 import Vp8Descriptor, is_keyframe, parse_descriptor

# First octet: X R N S R PID(3). Second (X=1): I L T K RSV(4).
X, S = 0x80, 0x10
I_, L_, T_, K_ = 0x80, 0x40, 0x20, 0x10


def test_minimal_descriptor_is_one_byte() -> None:
    assert parse_descriptor(bytes([S]) + b"\x9d\x01\x2a") == Vp8Descriptor(
        start=True, tid=None, size=1)
    assert parse_descriptor(bytes([0x00]) + b"payload") == Vp8Descriptor(
        start=False, tid=None, size=1)


def test_extension_byte_without_fields_is_two_bytes() -> None:
    assert parse_descriptor(bytes([X | S, 0x00]) + b"data") == Vp8Descriptor(
        start=True, tid=None, size=2)


def test_seven_bit_picture_id_takes_one_byte() -> None:
    desc = parse_descriptor(bytes([X | S, I_, 0x7F]) + b"data")
    assert desc == Vp8Descriptor(start=True, tid=None, size=3)


def test_fifteen_bit_picture_id_takes_two_bytes() -> None:
    desc = parse_descriptor(bytes([X | S, I_, 0x80 | 0x12, 0x34]) + b"data")
    assert desc == Vp8Descriptor(start=True, tid=None, size=4)


def test_tl0picidx_adds_one_byte() -> None:
    desc = parse_descriptor(bytes([X, I_ | L_, 0x80 | 0x01, 0x02, 0x05]) + b"data")
    assert desc == Vp8Descriptor(start=False, tid=None, size=5)


@pytest.mark.parametrize("tid", [0, 1, 2, 3])
def test_temporal_layer_id_is_read_from_the_top_two_bits(tid: int) -> None:
    tk = (tid << 6) | 0x20 | 0x03  # TID, Y=1, KEYIDX=3 (ignored without K)
    desc = parse_descriptor(bytes([X | S, I_ | L_ | T_, 0x80, 0x01, 0x07, tk]) + b"data")
    assert desc == Vp8Descriptor(start=True, tid=tid, size=6)


def test_keyidx_alone_takes_a_byte_but_gives_no_tid() -> None:
    desc = parse_descriptor(bytes([X | S, K_, 0xC5]) + b"data")
    assert desc == Vp8Descriptor(start=True, tid=None, size=3)


def test_t_and_k_share_one_byte() -> None:
    desc = parse_descriptor(bytes([X | S, T_ | K_, (2 << 6) | 0x1F]) + b"data")
    assert desc == Vp8Descriptor(start=True, tid=2, size=3)


@pytest.mark.parametrize("picture_id", [None, 5, 300])
@pytest.mark.parametrize("tid", [None, (0, 1), (2, 0)])
@pytest.mark.parametrize("tl0", [None, 9])
def test_size_matches_aiortc_depayloader(picture_id: int | None, tid: tuple[int, int] | None,
                                         tl0: int | None) -> None:
    payload = bytes(VpxPayloadDescriptor(partition_start=1, partition_id=0,
                                         picture_id=picture_id, tl0picidx=tl0,
                                         tid=tid)) + b"\x10frame"
    desc = parse_descriptor(payload)
    assert desc is not None
    assert payload[desc.size:] == vp8_depayload(payload) == b"\x10frame"
    assert desc.tid == (tid[0] if tid else None)
    assert desc.start


@pytest.mark.parametrize("payload", [
    b"",
    bytes([X]),  # X set, extension byte missing
    bytes([X | S, I_]),  # I set, picture id missing
    bytes([X | S, I_, 0x80]),  # long picture id, second byte missing
    bytes([X | S, L_]),  # TL0PICIDX missing
    bytes([X | S, T_]),  # T/K byte missing
    bytes([X | S, K_]),
    bytes([X | S, I_ | L_ | T_, 0x81, 0x02, 0x03]),  # T/K byte missing after the rest
])
def test_truncated_descriptor_is_none(payload: bytes) -> None:
    assert parse_descriptor(payload) is None


def test_descriptor_with_empty_payload_is_accepted() -> None:
    assert parse_descriptor(bytes([S])) == Vp8Descriptor(start=True, tid=None, size=1)


@pytest.mark.parametrize(("first", "start"), [
    (S, True),
    (S | 0x01, False),  # S=1 but a later partition (PID=1)
    (S | 0x07, False),
    (0x00, False),  # continuation packet of partition 0
    (0x20 | S, True),  # N (non-reference) does not matter
])
def test_frame_start_needs_s_bit_and_partition_zero(first: int, start: bool) -> None:
    desc = parse_descriptor(bytes([first]) + b"data")
    assert desc is not None and desc.start is start
    desc = parse_descriptor(bytes([X | first, I_, 0x11]) + b"data")
    assert desc is not None and desc.start is start


def test_keyframe_is_p_bit_clear() -> None:
    # VP8 frame tag: bit 0 of the first byte is P (0 = key frame).
    assert is_keyframe(b"\x10\x02\x00\x9d\x01\x2a")
    assert not is_keyframe(b"\x11\x02\x00")
    assert not is_keyframe(b"\x31")


def test_empty_frame_is_not_a_keyframe() -> None:
    assert not is_keyframe(b"")


def test_a_key_frame_header_gives_the_frame_size() -> None:
    from sfu.vp8 import keyframe_size

    header = bytes([0x50, 0x01, 0x00, 0x9D, 0x01, 0x2A]) + (960).to_bytes(2, "little") \
        + (540 | 0x4000).to_bytes(2, "little")  # (scaling bits are not part of the size)
    assert keyframe_size(header) == (960, 540)
    assert keyframe_size(bytes([0x51]) + header[1:]) is None  # an inter frame
    assert keyframe_size(header[:9]) is None
