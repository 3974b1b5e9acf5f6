"""ICE servers for clients, with TURN REST API credentials (coturn ``use-auth-secret``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from signaling.config import IceConfig


def turn_credentials(secret: str, user: str, ttl: int, now: float | None = None) -> tuple[str, str]:
    """Username ``<expiry>:<user>``, password ``base64(HMAC-SHA1(secret, username))``."""
    expiry = int((time.time() if now is None else now) + ttl)
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(config: IceConfig, user: str) -> list[dict[str, Any]]:
    """The ``iceServers`` list (RTCConfiguration shape) for one participant."""
    servers: list[dict[str, Any]] = []
    if config.stun_urls:
        servers.append({"urls": list(config.stun_urls)})
    if config.turn_urls:
        if config.turn_secret:
            username, credential = turn_credentials(config.turn_secret, user, config.turn_ttl)
        else:
            username, credential = config.turn_username, config.turn_password
        servers.append(
            {"urls": list(config.turn_urls), "username": username, "credential": credential}
        )
    return servers
