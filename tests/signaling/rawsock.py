"""A raw TCP WebSocket client for abuse tests: it can stop reading, or never finish its
headers, which no WebSocket library lets a test do."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any

SMALL_BUFFER = 4096
"""Receive buffer of a client that stops reading: the server's writes back up sooner."""


async def open_socket(host: str, port: int, *, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    return sock


def text_frame(data: str) -> bytes:
    """One masked (client → server) text frame."""
    payload = data.encode()
    mask = os.urandom(4)
    head = bytes([0x81])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


async def upgrade(sock: socket.socket, host: str, port: int, path: str = "/rtc") -> None:
    """Complete the WebSocket handshake (reads exactly the 101 response's headers)."""
    loop = asyncio.get_running_loop()
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n")
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1), 5.0)
        if not chunk:
            raise ConnectionError(f"closed during the handshake: {head!r}")
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head


async def send_json(sock: socket.socket, message: dict[str, Any]) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, text_frame(json.dumps(message)))


async def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Read (and discard) until the server closes or resets the socket."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536),
                                           max(0.01, deadline - loop.time()))
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        if not chunk:
            return True
    return False
