"""Wire codes are the domain's own codes: none is written twice, every one is documented."""

from __future__ import annotations

from pathlib import Path

from conference.errors import ConferenceCode, SfuCode
from signaling.errors import CloseCode, ErrorCode

DOCS = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()


def test_edge_codes_never_reuse_a_domain_code() -> None:
    domain = {c.value for c in (*ConferenceCode, *SfuCode)}
    assert [c.value for c in ErrorCode if c.value in domain] == []


def test_every_wire_code_is_documented() -> None:
    missing = [c.value for c in (*ErrorCode, *ConferenceCode, *SfuCode)
               if f"`{c.value}`" not in DOCS]
    assert missing == []


def test_every_close_code_is_documented() -> None:
    assert [c.value for c in CloseCode if str(c.value) not in DOCS] == []
