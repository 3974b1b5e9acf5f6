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


KNOWN: tuple[KnownBug, ...] = ()
"""Empty: every bug the fuzzers found so far is fixed and has a plain regression test."""


def known_bug(text: str) -> KnownBug | None:
    """The known bug whose signature ``text`` (a traceback, or a bad frame) carries."""
    for bug in KNOWN:
        if all(part in text for part in bug.signature):
            return bug
    return None


def known_exception(exc: BaseException) -> KnownBug | None:
    return known_bug("".join(traceback.format_exception(exc)))
