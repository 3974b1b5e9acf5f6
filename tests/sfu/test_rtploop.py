"""The compiled per-packet loop (sfu/_rtploop.c) writes what the Python loop writes."""

from __future__ import annotations

import os
import struct
from typing import Any

import pylibsrtp
import pytest

from sfu import hooks_fastpath
from sfu.hooks_fastpath import NATIVE_LOOP, Protector, protector

KEY = bytes(range(30))
HEADER = struct.Struct("!BBHII")


def test_the_compiled_loop_is_built_and_can_call_libsrtp() -> None:
    if not os.environ.get("PARLEY_CI") and NATIVE_LOOP is None:
        pytest.skip("sfu._rtploop was not built (no C compiler at install)")
    assert NATIVE_LOOP is not None, "sfu._rtploop is not built or pylibsrtp's libsrtp changed"


needs_loop = pytest.mark.skipif(NATIVE_LOOP is None, reason="sfu._rtploop was not built")


def _session(direction: int = pylibsrtp.Policy.SSRC_ANY_OUTBOUND) -> pylibsrtp.Session:
    return pylibsrtp.Session(policy=pylibsrtp.Policy(key=KEY, ssrc_type=direction))


def _protector() -> Protector:
    protect = protector(_session())
    assert isinstance(protect, Protector)
    return protect


def _chunks(sizes: list[int]) -> list[bytes]:
    return [bytes((n + i) & 0xFF for i in range(size)) for n, size in enumerate(sizes)]


def _python_loop(protect: Any, b0: int, pt: int, seq: int, ts: int, ssrc: int, first: bytes,
                 rest: bytes, chunks: list[bytes]) -> list[bytes]:
    last = len(chunks) - 1
    return [protect(HEADER.pack(b0, pt | 0x80 if i == last else pt, (seq + i) & 0xFFFF, ts,
                                ssrc) + (rest if i else first) + chunk)
            for i, chunk in enumerate(chunks)]


@needs_loop
@pytest.mark.parametrize("sizes", [[1296, 1296, 1296, 400], [1296, 1296], [37]],
                         ids=["frame", "two-full", "audio"])
def test_the_packets_are_byte_for_byte_the_python_loops(sizes: list[int]) -> None:
    native, python = _protector(), _protector()
    chunks = _chunks(sizes)
    first, rest = b"\xbe\xde\x00\x01\x12\x00\x00\x01\x90\x80\x81\x02", \
        b"\xbe\xde\x00\x01\x12\x00\x00\x01\x80\x80\x81\x02"
    history: list[Any] = [None] * 16
    record = ("the frame",)
    data, segment = native.protect_frame(0x90, 96, 0xFFFE, 0xDEADBEEF, 0x01020304, first,
                                         rest, chunks, history, record)
    expected = _python_loop(python, 0x90, 96, 0xFFFE, 0xDEADBEEF, 0x01020304, first, rest,
                            chunks)
    assert data == b"".join(expected)
    assert segment == len(expected[0])
    assert all(len(p) == segment for p in expected[:-1])
    slots = {(0xFFFE + i) & 0xFFFF & 15 for i in range(len(chunks))}  # across the wrap
    assert [i for i, r in enumerate(history) if r is record] == sorted(slots)


@needs_loop
def test_a_receiver_reads_every_packet_with_marker_and_numbers() -> None:
    native = _protector()
    receiver = _session(pylibsrtp.Policy.SSRC_ANY_INBOUND)
    chunks = _chunks([1200, 1200, 1200, 90])
    data, segment = native.protect_frame(0x80, 111, 7, 90000, 42, b"", b"", chunks,
                                         [None] * 8, None)
    packets = [data[pos:pos + segment] for pos in range(0, len(data), segment)]
    plain = [receiver.unprotect(p) for p in packets]
    assert [HEADER.unpack_from(p) for p in plain] == [
        (0x80, 111, 7, 90000, 42), (0x80, 111, 8, 90000, 42), (0x80, 111, 9, 90000, 42),
        (0x80, 111 | 0x80, 10, 90000, 42)]
    assert [p[12:] for p in plain] == chunks


def _with(args: tuple[Any, ...], at: int, *values: Any) -> tuple[Any, ...]:
    """``args`` with ``values`` in place of as many arguments from ``at`` on."""
    return (*args[:at], *values, *args[at + len(values):])


@needs_loop
def test_unusable_arguments_are_refused_without_harm() -> None:
    native = _protector()
    ok: tuple[Any, ...] = (0x80, 96, 1, 0, 1, b"", b"", [b"x" * 10], [None] * 4, None)
    native.protect_frame(*ok)
    bad: list[tuple[type[Exception], tuple[Any, ...]]] = [
        (ValueError, _with(ok, 2, 0x10000)),  # seq over 16 bits
        (ValueError, _with(ok, 1, 0x80)),  # payload type over 7 bits
        (ValueError, _with(ok, 5, b"a", b"")),  # prefixes of different lengths
        (ValueError, _with(ok, 7, [])),  # no chunks
        (ValueError, _with(ok, 8, [None] * 3)),  # history not a power of two
        (ValueError, _with(ok, 7, [b"x" * 10, b"y" * 11])),  # last longer
        (ValueError, _with(ok, 7, [b"x" * 10, b"y" * 9, b"z"])),  # uneven middle
        (ValueError, _with(ok, 7, [b"x" * 9000])),  # longer than a packet can be
        (TypeError, _with(ok, 7, [b"x", "y"])),  # not bytes
        (TypeError, _with(ok, 7, (b"x",))),  # not a list
    ]
    for error, args in bad:
        with pytest.raises(error):
            native.protect_frame(*args)
    assert NATIVE_LOOP is not None
    with pytest.raises(ValueError, match="null"):
        NATIVE_LOOP(0, hooks_fastpath._PROTECT_ADDRESS, *ok)
    with pytest.raises(TypeError):
        NATIVE_LOOP(*ok)


@needs_loop
def test_a_failing_protect_raises_and_leaves_no_half_sent_buffer() -> None:
    native = _protector()
    args: tuple[Any, ...] = (0x80, 96, 5, 0, 1, b"", b"", [b"x" * 10], [None] * 4, None)
    native.protect_frame(*args)
    with pytest.raises(RuntimeError, match="srtp_protect failed"):
        native.protect_frame(*args)  # the same index again: libsrtp's replay check
