"""The link between a socket and a participant session: two small protocols.

A *connection* (signaling/connection.py) owns the WebSocket and stays on the
node that accepted it; a *participant session* (signaling/session.py) runs the
handlers where the room lives. They talk only through these two ports:

- ``ClientLink`` (session → socket): send one encoded server message, or close
  with a code and a reason;
- ``SessionPort`` (socket → session): hand over one validated client message,
  or leave (the socket is gone).

On one node both are the objects themselves, called in-process. Between
nodes, a relayed implementation carries the same calls.
"""

from __future__ import annotations

from typing import Protocol

from conference.events import LeaveReason
from signaling.errors import CloseCode
from signaling.protocol import EncodedEvent, Message


class ClientLink(Protocol):
    def send(self, message: EncodedEvent) -> None:
        """Queue one server message for the client (never blocks)."""

    def close(self, code: CloseCode, reason: str) -> None:
        """Close the client's socket after what is queued. Idempotent."""


class SessionPort(Protocol):
    async def handle(self, message: Message) -> None:
        """Serve one validated client message; errors go back over the link."""

    def leave(self, reason: LeaveReason) -> None:
        """The socket is gone (or misbehaved): leave the room. Idempotent."""
