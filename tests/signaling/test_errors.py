"""Every domain error code has a wire code of the same value (the edge maps by value)."""

from __future__ import annotations

from conference.errors import ConferenceCode
from sfu.errors import SfuCode
from signaling.errors import ErrorCode


def test_every_conference_and_sfu_code_is_a_wire_code() -> None:
    wire = {code.value for code in ErrorCode}
    missing = [c.value for c in (*ConferenceCode, *SfuCode) if c.value not in wire]
    assert missing == []
