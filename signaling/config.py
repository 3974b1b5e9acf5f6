"""The node's configuration: defaults < YAML file < environment (PARLEY_*) < flags.

Loaded once by the CLI (or a test) and handed down; nothing else reads the
environment. Each layer receives only its own section.
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from conference.cluster.config import ClusterConfig, RedisConfig
from conference.config import BandwidthConfig, RoomConfig, SfuConfig


class ConfigError(Exception):
    """The configuration cannot be used; the message says which setting and why."""


@dataclass(frozen=True, kw_only=True)
class SignalingConfig:
    """Limits of the WebSocket edge."""

    max_message_bytes: int = 65536
    """Largest client message; a larger one gets ``message_too_large`` and a close (1009)."""
    rate_limit_per_second: float = 20.0
    """Token-bucket refill rate, messages per second per connection."""
    rate_limit_burst: int = 40
    """Token-bucket size."""
    rate_limit_strikes: int = 20
    """Messages refused for rate within ``rate_limit_window`` before the socket is closed."""
    rate_limit_window: float = 5.0
    join_timeout: float = 10.0
    """A socket that has not joined after this many seconds is closed."""
    heartbeat_interval: float = 10.0
    """The server sends a WebSocket ping this often."""
    heartbeat_timeout: float = 30.0
    """A client from which nothing (frame or pong) arrived for this long is removed."""
    allowed_origins: tuple[str, ...] = ()
    """Browser origins allowed besides same-origin and localhost; ``*`` allows all."""
    send_queue_size: int = 512
    """Messages waiting for a slow client before it is disconnected."""
    header_timeout: float = 10.0
    """A socket whose first request's headers have not all arrived after this many seconds
    is dropped; also how long a kept-alive connection may idle between requests."""
    max_connections_per_ip: int = 100
    """Open sockets (any HTTP, WebSockets included) one client IP may hold; 0: no cap."""
    join_rate_per_ip: float = 10.0
    """Joins per second one client IP may make, sustained (a token bucket); 0: no cap."""
    join_burst_per_ip: int = 50
    """Joins one client IP may make at once before ``join_rate_per_ip`` applies."""
    send_timeout: float = 5.0
    """Deadline of one write to a client socket (a message, a ping, the close); a client that
    stops reading is aborted when a write passes it, seconds."""
    resume_window: float = 15.0
    """How long a participant whose socket dropped (no ``leave``) stays in its room, and how
    long a resume token is valid, seconds; 0: no resumption, a drop is a leave."""


@dataclass(frozen=True, kw_only=True)
class AuthConfig:
    """Join-token verification."""

    keys: Mapping[str, str] = field(default_factory=dict)
    """API key → secret; several at once for rotation. Empty: development mode."""
    leeway: float = 10.0
    """Clock skew tolerated on ``exp`` and ``nbf``, seconds."""
    max_token_lifetime: float = 7 * 24 * 3600.0
    """A token whose ``exp`` lies further than this in the future is refused, seconds."""
    algorithms: tuple[str, ...] = ("HS256",)
    """Allowed JWT ``alg`` header values (HMAC only)."""


@dataclass(frozen=True, kw_only=True)
class IceConfig:
    """ICE servers handed to clients in the join reply."""

    stun_urls: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_secret: str = ""
    """Shared secret (coturn ``use-auth-secret``): per-participant credentials are minted."""
    turn_username: str = ""
    """Static TURN credentials, used when no ``turn_secret`` is set."""
    turn_password: str = ""
    turn_ttl: int = 3600
    """Lifetime of minted TURN credentials, seconds."""


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """Everything a node needs, one frozen value."""

    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "info"
    log_format: str = "text"
    public_url: str = ""
    """Base URL printed in join links; derived from host/port when empty."""
    shutdown_grace: float = 5.0
    """Seconds the node waits for clients to go after telling them it is shutting down."""
    malloc_trim_interval: float = 60.0
    """Seconds between ``malloc_trim(0)`` calls, which give the C allocator's free pages
    back to the system (glibc only); 0 turns it off (signaling/memory.py)."""
    malloc_arena_max: int = 2
    """At most this many glibc heaps (``parley serve`` sets it at start, unless
    ``MALLOC_ARENA_MAX`` is in the environment); 0 keeps glibc's default of eight per core."""
    development: bool = False
    """Set when no keys were configured and a development key was generated."""
    auth: AuthConfig = field(default_factory=AuthConfig)
    signaling: SignalingConfig = field(default_factory=SignalingConfig)
    rooms: RoomConfig = field(default_factory=RoomConfig)
    ice: IceConfig = field(default_factory=IceConfig)
    sfu: SfuConfig = field(default_factory=SfuConfig)
    bandwidth: BandwidthConfig = field(default_factory=BandwidthConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    """Empty ``url``: a single node with everything in memory."""
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def sfu_config(self) -> SfuConfig:
        """The SFU section with the ``bandwidth`` section folded in."""
        return replace(self.sfu, bandwidth=self.bandwidth)

    @property
    def room_state_ttl(self) -> float:
        """How long a room's shared state lives after its last write (``cluster.state_ttl``,
        or by default long enough to outlive an empty room)."""
        return self.cluster.state_ttl or 2 * self.rooms.empty_timeout + 3600.0

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"


_SECTIONS = ("auth", "signaling", "rooms", "ice", "sfu", "bandwidth", "redis", "cluster")
_LEVELS = ("debug", "info", "warning", "error")


def parse_keys(value: str | Mapping[str, str]) -> dict[str, str]:
    """``"k1:s1,k2:s2"`` (or a mapping) → ``{"k1": "s1", "k2": "s2"}``."""
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    keys: dict[str, str] = {}
    for pair in value.split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, sep, secret = pair.partition(":")
        if not sep or not key or not secret:
            raise ConfigError(f"keys: expected key:secret pairs, got {pair!r}")
        keys[key.strip()] = secret.strip()
    return keys


def _coerce(name: str, hint: Any, value: Any) -> Any:
    if name.rpartition(".")[2] == "keys":  # called with the dotted path, e.g. "auth.keys"
        return parse_keys(value)
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        hint = next(a for a in get_args(hint) if a is not type(None))
        origin = get_origin(hint)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if hint is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
        if origin is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(i).strip() for i in items if str(i).strip())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: cannot use {value!r} ({exc})") from exc
    raise ConfigError(f"{name}: unsupported setting type")


def _apply(obj: Any, values: Mapping[str, Any], where: str) -> Any:
    hints = get_type_hints(type(obj))
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"unknown setting '{where}{key}'")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}{key}: expected a mapping")
            changes[key] = _apply(current, value, f"{where}{key}.")
        else:
            changes[key] = _coerce(f"{where}{key}", hints[key], value)
    return replace(obj, **changes)


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """``PARLEY_PORT`` → port; ``PARLEY_SIGNALING_JOIN_TIMEOUT`` → signaling.join_timeout.

    ``PARLEY_KEYS`` is a shorthand for ``auth.keys``.
    """
    out: dict[str, Any] = {}
    top = {f.name for f in fields(NodeConfig)} - set(_SECTIONS)
    for raw, value in env.items():
        if not raw.startswith("PARLEY_"):
            continue
        name = raw[len("PARLEY_"):].lower()
        if name == "keys":
            out.setdefault("auth", {})["keys"] = value
            continue
        if name in top:
            out[name] = value
            continue
        for section in _SECTIONS:
            if name.startswith(section + "_"):
                out.setdefault(section, {})[name[len(section) + 1:]] = value
                break
    return out


def load_config(
    *,
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> NodeConfig:
    """Build the node's config once: defaults < YAML < environment < ``overrides`` (flags)."""
    config = NodeConfig()
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {path}: expected a mapping at the top level")
        if "keys" in data:
            data = dict(data)
            data.setdefault("auth", {})
            data["auth"] = {**data["auth"], "keys": data.pop("keys")}
        config = _apply(config, data, "")
    config = _apply(config, _from_env(os.environ if env is None else env), "")
    if overrides:
        config = _apply(config, overrides, "")
    return validate(config)


def validate(config: NodeConfig) -> NodeConfig:
    if config.log_level.lower() not in _LEVELS:
        raise ConfigError(f"log_level: one of {', '.join(_LEVELS)}")
    if config.log_format not in ("text", "json"):
        raise ConfigError("log_format: text or json")
    if not 0 <= config.port <= 65535:
        raise ConfigError("port: 0-65535")
    if config.malloc_trim_interval != 0 and not 1 <= config.malloc_trim_interval <= 86400:
        raise ConfigError("malloc_trim_interval: 0 (off) or 1 to 86400 seconds")
    if not 0 <= config.malloc_arena_max <= 64:
        raise ConfigError("malloc_arena_max: 0 (glibc's default) to 64")
    if config.auth.max_token_lifetime <= 0:
        raise ConfigError("auth.max_token_lifetime: must be positive")
    for alg in config.auth.algorithms:
        if not alg.startswith("HS"):
            raise ConfigError(f"auth.algorithms: only HMAC algorithms are allowed, not {alg!r}")
    s = config.signaling
    if s.heartbeat_timeout <= s.heartbeat_interval:
        raise ConfigError("signaling.heartbeat_timeout must exceed heartbeat_interval")
    if s.header_timeout <= 0:
        raise ConfigError("signaling.header_timeout: must be positive")
    if s.max_connections_per_ip < 0 or s.join_rate_per_ip < 0:
        raise ConfigError("signaling.max_connections_per_ip, join_rate_per_ip: 0 or more")
    if s.join_rate_per_ip > 0 and s.join_burst_per_ip < 1:
        raise ConfigError("signaling.join_burst_per_ip: at least 1")
    if not 0 < s.send_timeout <= 60:
        raise ConfigError("signaling.send_timeout: more than 0, at most 60 seconds")
    if not 0 <= s.resume_window <= 600:
        raise ConfigError("signaling.resume_window: 0 to 600 seconds")
    if s.max_message_bytes < 1024:
        raise ConfigError("signaling.max_message_bytes: at least 1024")
    if config.rooms.max_participants < 1:
        raise ConfigError("rooms.max_participants: at least 1")
    if config.rooms.stage_policy not in ("moderated", "auto"):
        raise ConfigError("rooms.stage_policy: moderated or auto")
    try:
        config.sfu.check()
    except ValueError as exc:
        raise ConfigError(f"sfu.{exc}") from exc
    for name, section in (("redis", config.redis), ("cluster", config.cluster)):
        try:
            section.check()
        except ValueError as exc:
            raise ConfigError(f"{name}.{exc}") from exc
    if config.sfu.bandwidth != BandwidthConfig():
        raise ConfigError("sfu.bandwidth: use the top-level bandwidth section")
    return config
