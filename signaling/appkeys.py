"""Typed keys for what the aiohttp application holds."""

from __future__ import annotations

from aiohttp import web

from signaling.config import NodeConfig
from signaling.node import Node
from signaling.relay import Relay

CONFIG = web.AppKey("config", NodeConfig)
NODE = web.AppKey("node", Node)
RELAY = web.AppKey("relay", Relay)
"""Only on a clustered node."""
