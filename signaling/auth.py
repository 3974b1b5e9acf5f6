"""Join tokens: HS256 JWTs signed with an API key's secret (the contract in docs/auth.md)."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from conference.ids import Identity, RoomName
from conference.permissions import BOOLEAN_GRANTS, Grants, Role, expand_grants
from signaling.config import AuthConfig
from signaling.errors import ErrorCode, SignalError

MAX_TOKEN_BYTES = 8192


@dataclass(frozen=True, kw_only=True)
class Claims:
    """A verified join token."""

    key: str
    identity: Identity
    name: str
    metadata: str
    grants: Grants
    expires_at: float
    jti: str | None
    token_id: str
    """What a removal bars from rejoining: the ``jti`` when present, else a hash of the
    verified claims that name this token (key, identity, room, ``iat``, ``exp``), never of
    the token's text, which has more than one valid spelling."""


def _fail(code: ErrorCode, message: str) -> SignalError:
    return SignalError(code, message)


class TokenVerifier:
    """Checks signature, algorithm, key, time window and grants of a join token."""

    def __init__(self, config: AuthConfig) -> None:
        self._keys = dict(config.keys)
        self._leeway = config.leeway
        self._max_lifetime = config.max_token_lifetime
        self._algorithms = list(config.algorithms)

    def verify(self, token: str | None) -> Claims:
        if not token:
            raise _fail(ErrorCode.MISSING_TOKEN, "a join token is required")
        if len(token) > MAX_TOKEN_BYTES:
            raise _fail(ErrorCode.INVALID_TOKEN, "token too long")
        if not token.isascii():
            raise _fail(ErrorCode.INVALID_TOKEN, "a JWT is ASCII text")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise _fail(ErrorCode.INVALID_TOKEN, f"not a JWT: {exc}") from exc
        alg = header.get("alg")
        if alg not in self._algorithms:
            raise _fail(ErrorCode.INVALID_ALGORITHM,
                        f"algorithm {alg!r} is not allowed (allowed: {self._algorithms})")
        key = unverified.get("iss")
        if not isinstance(key, str) or key not in self._keys:
            raise _fail(ErrorCode.UNKNOWN_KEY, "the token's iss names no known API key")
        try:
            claims = jwt.decode(
                token,
                self._keys[key],
                algorithms=self._algorithms,
                leeway=self._leeway,
                options={"require": ["exp", "sub", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise _fail(ErrorCode.TOKEN_EXPIRED, "the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise _fail(ErrorCode.TOKEN_NOT_YET_VALID, "the token is not valid yet") from exc
        except jwt.InvalidSignatureError as exc:
            raise _fail(ErrorCode.BAD_SIGNATURE, "the token's signature does not verify") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise _fail(ErrorCode.INVALID_ALGORITHM, str(exc)) from exc
        except jwt.PyJWTError as exc:
            raise _fail(ErrorCode.INVALID_TOKEN, str(exc)) from exc
        _check_times(claims, self._max_lifetime, self._leeway)
        return _claims_from(key, claims)


def _check_times(claims: Mapping[str, Any], max_lifetime: float, leeway: float) -> None:
    """Time claims are whole seconds within a sane range, and ``exp`` is not too far off."""
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, int)
                               or not 0 <= value < 2**40):
            raise _fail(ErrorCode.INVALID_TOKEN, f"{name} must be an integer of Unix seconds")
    if claims["exp"] - time.time() > max_lifetime + leeway:
        raise _fail(ErrorCode.INVALID_TOKEN,
                    f"exp is more than {int(max_lifetime)} s away (auth.max_token_lifetime)")


def _claims_from(key: str, claims: Mapping[str, Any]) -> Claims:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 256:
        raise _fail(ErrorCode.INVALID_TOKEN, "sub must be a non-empty string")
    name = claims.get("name", sub)
    metadata = claims.get("metadata", "")
    if not isinstance(name, str) or not isinstance(metadata, str):
        raise _fail(ErrorCode.INVALID_TOKEN, "name and metadata must be strings")
    jti = claims.get("jti")
    return Claims(
        key=key,
        identity=Identity(sub),
        name=name[:256],
        metadata=metadata,
        grants=parse_grants(claims.get("grants")),
        expires_at=float(claims["exp"]),
        jti=jti if isinstance(jti, str) else None,
        token_id=f"jti:{jti}" if isinstance(jti, str) and jti else _claims_id(key, claims),
    )


def _claims_id(key: str, claims: Mapping[str, Any]) -> str:
    named = [key, claims.get("sub"), claims.get("grants", {}).get("room"),
             claims.get("iat"), claims.get("exp")]
    return "claims:" + hashlib.sha256(repr(named).encode()).hexdigest()


def parse_grants(raw: Any) -> Grants:
    """The ``grants`` claim: ``room`` required, ``role`` expanded, booleans override."""
    if not isinstance(raw, Mapping):
        raise _fail(ErrorCode.INVALID_GRANTS, "grants must be an object")
    room = raw.get("room")
    if not isinstance(room, str) or not room or len(room) > 256:
        raise _fail(ErrorCode.INVALID_GRANTS, "grants.room must be a non-empty string")
    role: Role | None = None
    if "role" in raw:
        try:
            role = Role(raw["role"])
        except ValueError as exc:
            raise _fail(ErrorCode.INVALID_GRANTS,
                        f"grants.role must be one of {[r.value for r in Role]}") from exc
    overrides: dict[str, bool] = {}
    for name, value in raw.items():
        if name in ("room", "role"):
            continue
        if name not in BOOLEAN_GRANTS:
            raise _fail(ErrorCode.INVALID_GRANTS, f"unknown grant {name!r}")
        if not isinstance(value, bool):
            raise _fail(ErrorCode.INVALID_GRANTS, f"grant {name!r} must be true or false")
        overrides[name] = value
    return expand_grants(RoomName(room), role, overrides)


def mint_token(
    *,
    key: str,
    secret: str,
    room: str,
    identity: str,
    name: str | None = None,
    role: Role | str | None = None,
    grants: Mapping[str, bool] | None = None,
    ttl: float = 3600.0,
    metadata: str | None = None,
    not_before: float | None = None,
) -> str:
    """Mint a join token, as any backend could with a plain JWT library."""
    now = time.time()
    grant_claim: dict[str, Any] = {"room": room}
    if role is not None:
        grant_claim["role"] = Role(role).value
    grant_claim.update(grants or {})
    payload: dict[str, Any] = {
        "iss": key,
        "sub": identity,
        "name": name if name is not None else identity,
        "iat": int(now),
        "exp": int(now + ttl),
        "jti": uuid.uuid4().hex,
        "grants": grant_claim,
    }
    if not_before is not None:
        payload["nbf"] = int(not_before)
    if metadata is not None:
        payload["metadata"] = metadata
    return jwt.encode(payload, secret, algorithm="HS256")
