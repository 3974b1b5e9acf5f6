"""The codec: one declaration per client message gives validation and a JSON Schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from signaling import connection  # noqa: F401  (registers every message)
from signaling.errors import ErrorCode, SignalError
from signaling.protocol import MAX_DEPTH, MESSAGES, encode
from signaling.routes import close_codes_module

DOCS = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()


def _code(text: str) -> ErrorCode:
    with pytest.raises(SignalError) as info:
        MESSAGES.parse(text)
    return ErrorCode(info.value.code)


def test_every_documented_client_message_is_declared_and_every_declared_one_documented() -> None:
    section = DOCS.split("## Client messages", 1)[1].split("## Server messages", 1)[0]
    documented = set()
    for heading in re.findall(r"^### (.+)$", section, re.M):
        documented.update(part.strip() for part in heading.split("/"))
    assert documented == set(MESSAGES.types)


def test_json_schema_covers_every_message_with_its_limits() -> None:
    schema = MESSAGES.json_schema()
    defs = schema["$defs"]
    tags = {d["properties"]["type"]["enum"][0] for d in defs.values()
            if "type" in d.get("properties", {})}
    assert tags == set(MESSAGES.types)
    assert defs["Offer"]["properties"]["sdp"]["maxLength"] == 60000
    assert "sdp" in defs["Offer"]["required"]


def test_non_standard_json_constants_are_refused() -> None:
    for text in ('{"type":"data","payload":NaN}', '{"type":"data","payload":Infinity}',
                 '{"type":"data","payload":-Infinity}'):
        assert _code(text) is ErrorCode.MALFORMED_JSON


def test_nesting_deeper_than_the_limit_is_an_invalid_message() -> None:
    deep = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    assert _code(f'{{"type":"data","payload":{deep}}}') is ErrorCode.INVALID_MESSAGE
    very_deep = "[" * 5000 + "]" * 5000
    assert _code(f'{{"type":"data","payload":{very_deep}}}') is ErrorCode.INVALID_MESSAGE
    ok = "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)
    assert MESSAGES.parse(f'{{"type":"data","payload":{ok}}}') is not None


def test_wrong_types_unknown_types_and_ids() -> None:
    assert _code('{"type":"mute-track","track":"t","muted":1}') is ErrorCode.INVALID_MESSAGE
    assert _code('{"type":"mute-track","track":"t"}') is ErrorCode.INVALID_MESSAGE
    assert _code('{"type":"subscription","track":"t","state":"maybe"}') \
        is ErrorCode.INVALID_MESSAGE
    assert _code('{"type":"add-track"}') is ErrorCode.UNKNOWN_TYPE
    assert _code('{"type":"ping","id":true}') is ErrorCode.INVALID_MESSAGE
    assert _code('[1]') is ErrorCode.INVALID_MESSAGE
    assert MESSAGES.parse('{"type":"ping","id":7}').id == "7"


def test_server_messages_are_strict_json() -> None:
    text = encode({"type": "data", "payload": float("nan")}).with_seq(1)
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == \
        {"type": "data", "payload": None, "seq": 1}


def test_close_codes_reach_the_page_from_the_one_definition() -> None:
    module = close_codes_module()
    body = module[module.index("{"):module.rindex("}") + 1]
    codes = json.loads(body)
    assert codes["REMOVED"] == 4006 and codes["JOIN_REFUSED"] == 4009
    page = (Path(__file__).parents[2] / "signaling" / "static" / "app.js").read_text()
    assert not re.search(r"code === \d{4}", page)


def test_lone_surrogates_are_refused_and_pairs_kept() -> None:
    assert _code('{"type":"update","metadata":"a\\ud800b"}') is ErrorCode.MALFORMED_JSON
    assert _code('{"type":"update","metadata":"\\udfff"}') is ErrorCode.MALFORMED_JSON
    update = MESSAGES.parse('{"type":"update","metadata":"\\ud83d\\ude00"}')
    assert getattr(update, "metadata") == "\U0001f600"  # noqa: B009


def test_a_lone_surrogate_from_elsewhere_still_encodes_as_json() -> None:
    text = encode({"type": "data", "payload": "\ud800"}).with_seq(1)
    assert json.loads(text)["payload"] == "\ud800"
