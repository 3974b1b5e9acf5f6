"""Bugs the fuzzers found that are not fixed yet, so that they keep looking for new ones.

Each entry names the test in tests/fuzz/test_regressions.py that reproduces it, marked
``xfail(strict=True)``: when the fix lands that test passes, pytest reports the XPASS
as a failure, and the marker and the entry here go. A failure is a known bug when every
string of the entry's ``signature`` occurs in its traceback (or, for a bad server frame,
in the frame).
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class KnownBug:
    name: str
    where: str
    """Where the fix belongs."""
    signature: tuple[str, ...]
    test: str


KNOWN: tuple[KnownBug, ...] = (
    KnownBug(name="non-finite-numbers-relayed", where="signaling/protocol.py",
             signature=("not strict JSON",),
             test="test_nan_in_a_data_payload_is_refused_not_relayed"),
    KnownBug(name="deep-nesting-relay", where="signaling/protocol.py",
             signature=("signaling/protocol.py", "encode_event", "RecursionError"),
             test="test_deeply_nested_payload_is_refused_not_an_internal_error"),
    KnownBug(name="token-lone-surrogate", where="signaling/auth.py",
             signature=("signaling/auth.py", "UnicodeEncodeError"),
             test="test_token_with_a_lone_surrogate_is_an_invalid_token"),
    KnownBug(name="token-exp-overflow", where="signaling/auth.py",
             signature=("signaling/auth.py", "OverflowError"),
             test="test_token_with_a_huge_exp_is_refused_with_a_code"),
    KnownBug(name="metadata-lone-surrogate", where="conference/room.py",
             signature=("conference/room.py", "metadata.encode()", "UnicodeEncodeError"),
             test="test_metadata_with_a_lone_surrogate_is_refused_with_a_code"),
    KnownBug(name="subscriber-close-after-failure", where="sfu/transport.py",
             signature=("sfu/transport.py", "_negotiate_loop", "InvalidStateError"),
             test="test_subscriber_connection_that_ended_closes_without_an_error"),
)


def known_bug(text: str) -> KnownBug | None:
    """The known bug whose signature ``text`` (a traceback, or a bad frame) carries."""
    for bug in KNOWN:
        if all(part in text for part in bug.signature):
            return bug
    return None


def known_exception(exc: BaseException) -> KnownBug | None:
    return known_bug("".join(traceback.format_exception(exc)))
