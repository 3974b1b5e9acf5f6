"""Join tokens through a real node: every refusal code, the 4001 close, rotation, metrics."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families

from conference.permissions import Role, role_grants
from signaling.auth import parse_grants
from signaling.config import AuthConfig, ConfigError, validate
from signaling.errors import CloseCode, ErrorCode, SignalError
from tests.conftest import KEY, SECRET, NodeHarness, StartNode, make_config, token

OTHER_SECRET = "another-secret-nobody-configured-0000"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: dict[str, Any]) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


def _payload(**overrides: Any) -> dict[str, Any]:
    """A valid claim set for KEY; keyword arguments replace (or, with None, drop) claims."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": KEY, "sub": "alice", "name": "Alice", "iat": now, "exp": now + 600,
        "grants": {"room": "r1", "role": "speaker"},
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _hs256_by_hand(payload: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT'})}.{_segment(payload)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


async def _join_refused(
    node: NodeHarness, tok: str | None, code: ErrorCode, *, path: str = "/rtc", **extra: Any
) -> None:
    """Send a join, expect the coded error answering it, then a 4001 close."""
    client = await node.connect(path)
    if tok is not None:
        extra["token"] = tok
    msg_id = await client.send(type="join", **extra)
    error = await client.expect("error")
    assert error["code"] == code.value, error
    assert error["id"] == msg_id
    closing = await client.closed()
    assert closing.type == aiohttp.WSMsgType.CLOSE
    assert closing.data == CloseCode.AUTH_FAILED == 4001
    assert closing.extra == code.value


# -- refusals -----------------------------------------------------------------
async def test_join_without_any_token_is_refused_with_missing_token(node: NodeHarness) -> None:
    await _join_refused(node, None, ErrorCode.MISSING_TOKEN)


async def test_garbage_token_is_refused_as_invalid_token(node: NodeHarness) -> None:
    await _join_refused(node, "not.a.jwt-at-all", ErrorCode.INVALID_TOKEN)


async def test_token_signed_with_another_secret_is_refused_as_bad_signature(
    node: NodeHarness,
) -> None:
    tok = jwt.encode(_payload(), OTHER_SECRET, algorithm="HS256")
    await _join_refused(node, tok, ErrorCode.BAD_SIGNATURE)


async def test_token_whose_iss_is_not_a_configured_key_is_refused_as_unknown_key(
    node: NodeHarness,
) -> None:
    tok = jwt.encode(_payload(iss="nobody"), SECRET, algorithm="HS256")
    await _join_refused(node, tok, ErrorCode.UNKNOWN_KEY)


async def test_token_without_iss_is_refused_as_unknown_key(node: NodeHarness) -> None:
    tok = jwt.encode(_payload(iss=None), SECRET, algorithm="HS256")
    await _join_refused(node, tok, ErrorCode.UNKNOWN_KEY)


async def test_token_expired_beyond_the_leeway_is_refused(node: NodeHarness) -> None:
    await _join_refused(node, token(ttl=-60), ErrorCode.TOKEN_EXPIRED)


async def test_token_expired_within_the_leeway_is_accepted(start_node: StartNode) -> None:
    lenient = await start_node(auth=AuthConfig(keys={KEY: SECRET}, leeway=30))
    client = await lenient.connect()
    reply = await client.join(token(ttl=-5))
    assert reply["participant"]["identity"] == "alice"
    await _join_refused(lenient, token(ttl=-90), ErrorCode.TOKEN_EXPIRED)


async def test_token_without_exp_is_refused_as_invalid_token(node: NodeHarness) -> None:
    tok = jwt.encode(_payload(exp=None), SECRET, algorithm="HS256")
    await _join_refused(node, tok, ErrorCode.INVALID_TOKEN)


async def test_token_whose_nbf_is_in_the_future_is_refused(node: NodeHarness) -> None:
    tok = token(not_before=time.time() + 120)
    await _join_refused(node, tok, ErrorCode.TOKEN_NOT_YET_VALID)


async def test_nbf_a_little_ahead_is_forgiven_by_the_leeway(node: NodeHarness) -> None:
    client = await node.connect()
    reply = await client.join(token(not_before=time.time() + 3))
    assert reply["room"] == "r1"


async def test_unsigned_alg_none_token_is_refused_as_invalid_algorithm(
    node: NodeHarness,
) -> None:
    tok = f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(_payload())}."
    assert jwt.get_unverified_header(tok)["alg"] == "none"
    await _join_refused(node, tok, ErrorCode.INVALID_ALGORITHM)


async def test_token_issued_in_the_future_is_refused_as_not_yet_valid(
    node: NodeHarness,
) -> None:
    tok = jwt.encode(_payload(iat=int(time.time()) + 120), SECRET, algorithm="HS256")
    await _join_refused(node, tok, ErrorCode.TOKEN_NOT_YET_VALID)


async def test_token_with_an_audience_is_refused_as_invalid_token(node: NodeHarness) -> None:
    tok = jwt.encode(_payload(aud="parley"), SECRET, algorithm="HS256")
    await _join_refused(node, tok, ErrorCode.INVALID_TOKEN)


async def test_token_with_an_empty_sub_is_refused_as_invalid_token(node: NodeHarness) -> None:
    tok = jwt.encode(_payload(sub=""), SECRET, algorithm="HS256")
    await _join_refused(node, tok, ErrorCode.INVALID_TOKEN)


async def test_hs512_is_refused_unless_configured(start_node: StartNode) -> None:
    secret = SECRET * 2  # HS512 wants a 64-byte secret
    tok = jwt.encode(_payload(), secret, algorithm="HS512")
    strict = await start_node(auth=AuthConfig(keys={KEY: secret}))
    await _join_refused(strict, tok, ErrorCode.INVALID_ALGORITHM)
    wider = await start_node(auth=AuthConfig(keys={KEY: secret}, algorithms=("HS256", "HS512")))
    client = await wider.connect()
    assert (await client.join(tok))["participant"]["identity"] == "alice"


@pytest.mark.parametrize("alg", ["none", "RS256", "ES256"])
def test_config_refuses_non_hmac_algorithms(alg: str) -> None:
    with pytest.raises(ConfigError, match="only HMAC"):
        validate(make_config(auth=AuthConfig(keys={KEY: SECRET}, algorithms=("HS256", alg))))


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


async def test_rs256_token_is_refused_as_invalid_algorithm(
    node: NodeHarness, rsa_key: rsa.RSAPrivateKey
) -> None:
    tok = jwt.encode(_payload(), rsa_key, algorithm="RS256")
    public = rsa_key.public_key()
    assert jwt.decode(tok, public, algorithms=["RS256"])["sub"] == "alice"  # really signed
    await _join_refused(node, tok, ErrorCode.INVALID_ALGORITHM)


async def test_hs256_signed_with_an_rsa_public_key_pem_is_refused_as_bad_signature(
    node: NodeHarness, rsa_key: rsa.RSAPrivateKey
) -> None:
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    tok = _hs256_by_hand(_payload(), pem)
    assert jwt.get_unverified_header(tok)["alg"] == "HS256"
    await _join_refused(node, tok, ErrorCode.BAD_SIGNATURE)


async def test_token_for_another_room_than_the_join_asks_is_refused(node: NodeHarness) -> None:
    await _join_refused(node, token("r1"), ErrorCode.WRONG_ROOM, room="other")


async def test_token_for_another_room_than_the_url_asks_is_refused(node: NodeHarness) -> None:
    await _join_refused(node, token("r1"), ErrorCode.WRONG_ROOM, path="/rtc?room=other")


async def test_room_named_in_join_and_token_alike_is_accepted(node: NodeHarness) -> None:
    client = await node.connect("/rtc?room=r1")
    assert (await client.join(token("r1"), room="r1"))["room"] == "r1"


async def test_token_without_room_join_is_refused(node: NodeHarness) -> None:
    tok = token(grants={"room_join": False})
    await _join_refused(node, tok, ErrorCode.JOIN_NOT_ALLOWED)


@pytest.mark.parametrize("grants", [
    pytest.param({"room": "r1", "can_fly": True}, id="unknown grant name"),
    pytest.param({"room": "r1", "can_publish": "yes"}, id="non-boolean grant"),
    pytest.param({"room": "r1", "can_publish": 1}, id="integer grant"),
    pytest.param({"role": "speaker"}, id="missing room"),
    pytest.param({"room": "", "role": "speaker"}, id="empty room"),
    pytest.param({"room": "r1", "role": "admin"}, id="bad role"),
    pytest.param(None, id="no grants claim"),
    pytest.param(["r1"], id="grants not an object"),
])
async def test_malformed_grants_are_refused_as_invalid_grants(
    node: NodeHarness, grants: Any
) -> None:
    tok = jwt.encode(_payload(grants=grants), SECRET, algorithm="HS256")
    await _join_refused(node, tok, ErrorCode.INVALID_GRANTS)


# -- accepted tokens ----------------------------------------------------------
async def test_token_minted_with_pyjwt_alone_joins_with_its_grants(node: NodeHarness) -> None:
    now = int(time.time())
    tok = jwt.encode({
        "iss": KEY, "sub": "bob", "name": "Bob", "iat": now, "exp": now + 300,
        "nbf": now, "jti": "t-1", "metadata": '{"seat": 3}',
        "grants": {"room": "town-hall", "role": "listener", "can_publish_data": False},
    }, SECRET, algorithm="HS256")
    client = await node.connect()
    reply = await client.join(tok)
    assert reply["room"] == "town-hall"
    assert reply["participant"]["identity"] == "bob"
    assert reply["participant"]["name"] == "Bob"
    assert reply["participant"]["metadata"] == '{"seat": 3}'
    grants = reply["grants"]
    assert grants["can_publish"] is False and grants["can_request_publish"] is True
    assert grants["can_publish_data"] is False  # the explicit boolean beat the role


async def test_access_token_on_the_url_is_used_when_join_carries_none(
    node: NodeHarness,
) -> None:
    client = await node.connect("/rtc", params={"access_token": token("r1", "carol")})
    await client.send(type="join")
    reply = await client.expect("joined")
    assert reply["participant"]["identity"] == "carol"


async def test_bad_access_token_on_the_url_is_refused(node: NodeHarness) -> None:
    bad = jwt.encode(_payload(), OTHER_SECRET, algorithm="HS256")
    await _join_refused(node, None, ErrorCode.BAD_SIGNATURE, path=f"/rtc?access_token={bad}")


async def test_both_keys_of_a_rotation_are_accepted(start_node: StartNode) -> None:
    old = ("k-old", "old-secret-" + "0" * 30)
    new = ("k-new", "new-secret-" + "1" * 30)
    rotating = await start_node(auth=AuthConfig(keys=dict([old, new])))
    for key, secret, who in ((*old, "alice"), (*new, "bob")):
        tok = jwt.encode(_payload(iss=key, sub=who), secret, algorithm="HS256")
        client = await rotating.connect()
        assert (await client.join(tok))["participant"]["identity"] == who
    # a secret is bound to its own key: the old key's name with the new secret fails
    crossed = jwt.encode(_payload(iss=old[0], sub="eve"), new[1], algorithm="HS256")
    await _join_refused(rotating, crossed, ErrorCode.BAD_SIGNATURE)


async def test_refusals_are_counted_by_reason_in_metrics(node: NodeHarness) -> None:
    await _join_refused(node, None, ErrorCode.MISSING_TOKEN)
    for _ in range(2):
        await _join_refused(node, token(ttl=-60), ErrorCode.TOKEN_EXPIRED)
    await _join_refused(node, token("r1"), ErrorCode.WRONG_ROOM, room="r2")
    await node.joined("r1", "alice")  # an accepted join counts nothing
    async with node.http.get(node.url("/metrics")) as resp:
        assert resp.status == 200
        text = await resp.text()
    counts = {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "parley_signaling_auth_failures_total"
    }
    assert counts == {"missing_token": 1.0, "token_expired": 2.0, "wrong_room": 1.0}


# -- parse_grants edge cases ----------------------------------------------------
def test_parse_grants_expands_the_role_then_applies_booleans() -> None:
    grants = parse_grants({"room": "r", "role": "moderator", "room_admin": False})
    expected = role_grants(Role.MODERATOR) | {"room_admin": False}
    assert {k: getattr(grants, k) for k in expected} == expected
    assert grants.room == "r"


def test_parse_grants_with_only_a_room_gives_the_defaults() -> None:
    grants = parse_grants({"room": "r"})
    assert grants.room_join and grants.can_subscribe
    assert not (grants.can_publish or grants.can_publish_data or grants.room_admin)


@pytest.mark.parametrize("raw", [
    {"room": "x" * 257},
    {"room": 5},
    {"room": "r", "role": None},
    {"room": "r", "hidden": None},
])
def test_parse_grants_refuses_edge_cases(raw: dict[str, Any]) -> None:
    with pytest.raises(SignalError) as info:
        parse_grants(raw)
    assert info.value.code is ErrorCode.INVALID_GRANTS


# -- claim types and lifetime ---------------------------------------------------------
@pytest.mark.parametrize("exp", [
    "EXP_AS_STRING", 1.5, 1e308, 10**400, 253402300799,
])
async def test_time_claims_must_be_whole_seconds_in_range(node: NodeHarness, exp: Any) -> None:
    now = int(time.time())
    value = {"EXP_AS_STRING": str(now + 600), 1.5: now + 600.5}.get(exp, exp)
    tok = _hs256_by_hand(_payload(exp=value), SECRET.encode())
    await _join_refused(node, tok, ErrorCode.INVALID_TOKEN)


async def test_a_token_living_longer_than_the_maximum_is_refused(start_node: StartNode) -> None:
    node = await start_node(make_config(auth=AuthConfig(keys={KEY: SECRET},
                                                        max_token_lifetime=3600)))
    await _join_refused(node, token(ttl=7200), ErrorCode.INVALID_TOKEN)
    client = await node.connect()
    assert (await client.join(token(ttl=1800)))["type"] == "joined"
