"""Consent freshness that tolerates a loaded node (aioice internals, pinned and tested).

aioice 0.13's ``Connection.query_consent`` sends one Binding request every 4-6 s, never
retransmits it (0.5 s timeout) and closes the connection after six misses in a row. A
node whose event loop lags reads a response late, behind the media queued on its socket,
or the kernel drops it from a full socket buffer: every check then "misses" although the
browser answered each one, and the node ends its own connections about 30 s into a busy
meeting. RFC 7675 as browsers implement it instead: each check is a STUN transaction with
RTO-based retransmissions (a late answer to any of them counts), and consent is lost only
when no check has succeeded for 30 s. ``keep_consent_fresh`` gives every ICE connection of
one peer connection this loop in place of aioice's (instance attribute ``query_consent``,
which ``Connection.connect`` starts and ``Connection.close`` cancels through
``_query_consent_task``); other connections of the process keep aioice's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aioice
import aioice.ice
import aioice.stun
from aiortc import RTCPeerConnection, RTCSessionDescription

from sfu.hooks import AIOICE_VERSION, HookError

consent_log = logging.getLogger("parley.sfu.consent")


@dataclass(frozen=True, kw_only=True)
class ConsentPolicy:
    """Timing of consent freshness checks (RFC 7675 section 5.1)."""

    interval: float = 5.0
    """A check starts every ``interval`` seconds, randomised to 0.8-1.2 times it."""
    timeout: float = 30.0
    """Consent is lost when no check has succeeded for this long."""
    retransmissions: int = 4
    """Retransmissions of each check, RTO 0.5 s doubling (sent at 0, 0.5, 1.5, 3.5,
    7.5 s; given up at 15.5 s)."""

    def next_delay(self) -> float:
        return self.interval * (0.8 + 0.4 * random.random())

    @classmethod
    def for_window(cls, timeout: float) -> ConsentPolicy:
        """Consent lost after ``timeout`` seconds without an answer; checks every 5 s,
        or six times per window when it is shorter than 30 s."""
        return cls(interval=min(5.0, timeout / 6), timeout=timeout)


CONSENT = ConsentPolicy()
_CONSENT_HOOK_ATTR = "_parley_consent"
_CONSENT_LOST_ATTR = "_parley_consent_lost"


def check_consent_hook_points() -> None:
    """Raise HookError unless aioice is the version whose consent loop is replaced."""
    if aioice.__version__ != AIOICE_VERSION:
        raise HookError(f"aioice {aioice.__version__} is not {AIOICE_VERSION}: re-verify "
                        "Connection.connect/close/query_consent and StunProtocol.request")
    for name in ("query_consent", "build_request", "connect", "close"):
        if not callable(getattr(aioice.ice.Connection, name, None)):
            raise HookError(f"aioice.ice.Connection has no {name}")
    if "retransmissions" not in inspect.signature(aioice.ice.StunProtocol.request).parameters:
        raise HookError("aioice StunProtocol.request takes no retransmissions")


def keep_consent_fresh(pc: RTCPeerConnection, policy: ConsentPolicy = CONSENT) -> None:
    """Every ICE connection of ``pc`` checks consent as RFC 7675 asks (call before its
    first offer/answer). aiortc creates the ICE connections while applying
    descriptions and starts connecting only after, in a task of its own: each
    connection is taken over right after each description is applied."""
    check_consent_hook_points()
    for name in ("setLocalDescription", "setRemoteDescription"):
        setattr(pc, name, _adopting_consent(pc, getattr(pc, name), policy))


def _adopting_consent(pc: RTCPeerConnection, original: Callable[..., Awaitable[None]],
                      policy: ConsentPolicy) -> Callable[..., Awaitable[None]]:
    async def apply(sessionDescription: RTCSessionDescription | None = None) -> None:
        await original(sessionDescription)
        for connection in _ice_connections(pc):
            adopt_consent(connection, policy)

    return apply


def _ice_connections(pc: RTCPeerConnection) -> list[Any]:
    transports = [t.sender.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    connections = []
    for dtls in transports:
        if dtls is None:
            continue
        connection = getattr(dtls.transport.iceGatherer, "_connection", None)
        if connection is None:
            raise HookError("RTCIceGatherer has no aioice _connection")
        if connection not in connections:
            connections.append(connection)
    return connections


def consent_lost(pc: RTCPeerConnection) -> bool:
    """Whether :func:`fresh_consent` closed one of ``pc``'s ICE connections."""
    return any(getattr(c, _CONSENT_LOST_ATTR, False) for c in _ice_connections(pc))


def adopt_consent(connection: Any, policy: ConsentPolicy = CONSENT) -> None:
    """Run :func:`fresh_consent` instead of aioice's loop once ``connection`` connects
    (idempotent; a connection that is already connected keeps the loop it has)."""
    if getattr(connection, _CONSENT_HOOK_ATTR, None) is None:
        setattr(connection, _CONSENT_HOOK_ATTR, policy)
        connection.query_consent = functools.partial(fresh_consent, connection, policy)


async def fresh_consent(connection: Any, policy: ConsentPolicy = CONSENT) -> None:
    """Check consent on each nominated pair until the connection closes; close it
    when no check has succeeded for ``policy.timeout`` seconds."""
    if connection._closing:
        # Closed while connecting: aioice's connect() starts this loop once its checks
        # succeed, even when close() ran in between (and found no loop to cancel). With
        # no pair left the loop would wait out the whole window, holding the connection,
        # then report consent lost on a connection closed long before.
        return
    loop = asyncio.get_running_loop()
    key = connection.remote_password.encode("utf8")
    last_success = loop.time()
    lost = asyncio.Event()
    checks: set[asyncio.Task[None]] = set()

    async def check(pair: Any) -> None:
        nonlocal last_success
        request = connection.build_request(pair, nominate=False)
        try:
            await pair.protocol.request(request, pair.remote_addr, integrity_key=key,
                                        retransmissions=policy.retransmissions)
        except aioice.stun.TransactionError:
            if loop.time() - last_success >= policy.timeout:
                lost.set()
        else:
            last_success = loop.time()

    async def expired() -> bool:
        """The window has passed: one more turn of the loop first, so that answers a
        stalled loop has not read yet still count."""
        if loop.time() - last_success < policy.timeout:
            return False
        await asyncio.sleep(0.05)
        return loop.time() - last_success >= policy.timeout

    try:
        while not lost.is_set():
            remaining = last_success + policy.timeout - loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), max(0.0, min(policy.next_delay(),
                                                                 remaining)))
            if await expired():
                break
            for pair in [] if lost.is_set() else list(connection._nominated.values()):
                task = asyncio.create_task(check(pair))
                checks.add(task)
                task.add_done_callback(checks.discard)
    finally:
        for task in checks:
            task.cancel()
        await asyncio.gather(*checks, return_exceptions=True)
    consent_log.warning("ICE consent lost: no check answered for %.0f s",
                        loop.time() - last_success)
    setattr(connection, _CONSENT_LOST_ATTR, True)
    connection._query_consent_task = None  # aioice's close() would cancel this very task
    await connection.close()
