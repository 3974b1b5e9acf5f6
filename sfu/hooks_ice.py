"""aioice: sockets gathered after their connection closed.

aioice 0.13's ``Connection.close()`` closes the ``StunProtocol``s in
``Connection._protocols`` and clears the list, but ``get_component_candidates``
appends the host protocols it bound only once every bind is done. A ``close()``
in between (a client that leaves while the node answers its offer, a connection
that fails while the node re-offers) leaves those sockets open for the life of
the process: an fd per address per occurrence, and with ``sfu.udp_port`` a route
on the shared socket.

:func:`close_late_candidates` wraps ``Connection.gather_candidates``: when
gathering ends on a connection that was closed meanwhile, what it gathered is
closed too. Pinned to the aioice version sfu/hooks.py names; tested in
tests/sfu/test_hooks_ice.py.
"""

from __future__ import annotations

import functools
from typing import Any

import aioice
import aioice.ice

from sfu.hooks import AIOICE_VERSION, HookError

MARK = "closes_late_candidates"
"""Set on the installed wrapper: installing twice (or after the client's same fix) is a
no-op."""


def close_late_candidates() -> None:
    """Install the fix (idempotent); fails loudly on another aioice."""
    current = aioice.ice.Connection.gather_candidates
    if getattr(current, MARK, False):
        return
    if aioice.__version__ != AIOICE_VERSION:
        raise HookError(f"aioice {aioice.__version__} is not {AIOICE_VERSION}: re-verify "
                        "Connection.close, gather_candidates and _protocols")

    @functools.wraps(current)
    async def gather_candidates(self: Any) -> None:
        try:
            await current(self)
        finally:
            if self._closing:
                await close_gathered(self)

    setattr(gather_candidates, MARK, True)
    aioice.ice.Connection.gather_candidates = gather_candidates  # type: ignore[method-assign]


async def close_gathered(connection: Any) -> None:
    """Close the protocols ``connection`` still lists (it is closed: none is in use)."""
    protocols, connection._protocols = list(connection._protocols), []
    connection._local_candidates.clear()
    for protocol in protocols:
        await protocol.close()
