"""One UDP socket for every ICE connection of the node (``sfu.udp_port``).

Each ICE connection attaches an ``asyncio.DatagramProtocol`` under its local
ufrag and receives a :class:`MuxEndpoint`, a datagram transport that sends from
the shared socket, as if the connection owned a socket of its own. Every
datagram that arrives is handed to one endpoint, or dropped:

- a STUN request goes to the endpoint whose ufrag is the first half of its
  USERNAME (``receiver:sender``, the receiver being us), and, if signed with
  that connection's ICE password, its source address becomes that endpoint's; a
  request naming no attached ufrag is dropped, even from a known address, so a
  check never reaches the wrong connection;
- a STUN response goes to the endpoint that sent the request (by transaction
  id), else to the owner of its source address;
- anything else (DTLS, SRTP, SRTCP, ...) goes to the owner of its source address.

An endpoint also owns the addresses it sends to first (a check sent before the
peer's own checks arrive), until a signed STUN request from that address names
another ufrag. At most 32 addresses route to one endpoint (the oldest go first).
Closing an endpoint forgets its ufrag, its addresses and its pending
transactions. The mux knows nothing of any ICE library: ``sfu/hooks.py`` adapts
aioice to it.

The node opens its mux, and declares the address it announces, once for its
lifetime with :func:`node_media_socket` (the application's cleanup context);
:func:`current` is what peer connections created meanwhile use.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sfu import hooks
from sfu.config import SfuConfig

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

log = logging.getLogger("parley.sfu.udpmux")

Address = tuple[str, int]

STUN_MAGIC = b"\x21\x12\xa4\x42"
_STUN_HEADER = 20
_USERNAME = 0x0006
_MESSAGE_INTEGRITY = 0x0008
_MAX_ADDRESSES = 32
"""Remote addresses routed to one connection; more evict the oldest (a peer has a few)."""
_MAX_TRANSACTIONS = 8192
"""Pending STUN transactions remembered for routing responses; the oldest go first."""
_UFRAG_ATTEMPTS = 8
RECEIVE_BUFFER = 4 * 1024 * 1024
"""SO_RCVBUF asked for the shared socket (the kernel caps it at net.core.rmem_max)."""


class UfragInUse(Exception):
    """Another attached connection already has this ufrag."""


def stun_class(data: bytes) -> int | None:
    """0 request, 1 indication, 2 success response, 3 error response; None: not STUN."""
    if len(data) < _STUN_HEADER or data[0] > 3 or data[4:8] != STUN_MAGIC:
        return None
    return ((data[0] & 0x01) << 1) | ((data[1] & 0x10) >> 4)


def _stun_attributes(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(type, value offset, value length) of each attribute that fits in ``data``."""
    end = min(len(data), _STUN_HEADER + int.from_bytes(data[2:4], "big"))
    pos = _STUN_HEADER
    while pos + 4 <= end:
        kind = int.from_bytes(data[pos:pos + 2], "big")
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if pos + 4 + length > end:
            return
        yield kind, pos + 4, length
        pos += 4 + length + (-length % 4)


def stun_local_ufrag(data: bytes) -> str | None:
    """The part before ':' of a STUN message's USERNAME (the receiver's ufrag), if any."""
    for kind, start, length in _stun_attributes(data):
        if kind == _USERNAME:
            ufrag, colon, _ = data[start:start + length].partition(b":")
            return ufrag.decode("utf-8", "replace") if colon else None
    return None


def stun_integrity_ok(data: bytes, key: bytes) -> bool:
    """Whether the message's MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 14.5) matches ``key``."""
    for kind, start, length in _stun_attributes(data):
        if kind == _MESSAGE_INTEGRITY:
            if length != 20:
                return False
            # The HMAC covers the message up to the attribute, its length field
            # counting up to the attribute's end.
            header = data[:2] + start.to_bytes(2, "big") + data[4:_STUN_HEADER]
            digest = hmac.new(key, header + data[_STUN_HEADER:start - 4], "sha1").digest()
            return hmac.compare_digest(digest, data[start:start + 20])
    return False


class MuxEndpoint(asyncio.DatagramTransport):
    """One connection's view of the shared socket. ``close()`` is idempotent."""

    def __init__(self, mux: UdpMux, ufrag: str, protocol: asyncio.DatagramProtocol,
                 key: bytes | None) -> None:
        super().__init__(extra={"sockname": mux.address, "peername": None})
        self.mux = mux
        self.ufrag = ufrag
        self.key = key
        """The connection's ICE password: a check claims an address only if signed with it."""
        self.protocol = protocol
        self.deliver = protocol.datagram_received
        self.addresses: dict[Address, bool] = {}
        """Remote addresses routed here → confirmed by a STUN request from them."""
        self.transactions: set[bytes] = set()
        self.closed = False

    def sendto(self, data: Any, addr: Any = None) -> None:
        if self.closed or addr is None or not data:
            return
        if addr not in self.addresses:
            self.mux._learn(addr, self)
        if data[0] < 4 and stun_class(data) == 0:
            self.mux._expect_response(bytes(data[8:20]), self)
        self.mux._send(data, addr)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.mux._detach(self)
        asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MuxEndpoint({self.ufrag!r}, {len(self.addresses)} addresses)"


class _SocketProtocol(asyncio.DatagramProtocol):
    def __init__(self, mux: UdpMux) -> None:
        self.datagram_received = mux._receive  # type: ignore[method-assign]
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.mux = mux

    def error_received(self, exc: Exception) -> None:
        self.mux.errors += 1  # an ICMP error about some peer: no connection to tell

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class UdpMux:
    """The shared socket and its routes. Create with :meth:`open`; ``close()`` is idempotent."""

    def __init__(self) -> None:
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _SocketProtocol | None = None
        self.address: Address = ("", 0)
        """Where the socket is bound."""
        self._by_ufrag: dict[str, MuxEndpoint] = {}
        self._by_addr: dict[Address, MuxEndpoint] = {}
        self._by_transaction: dict[bytes, MuxEndpoint] = {}
        self.received = 0
        self.dropped = 0
        """Datagrams no attached connection could take."""
        self.errors = 0
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> UdpMux:
        """Bind ``(host, port)``; port 0 lets the kernel choose one (tests)."""
        mux = cls()
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _SocketProtocol(mux), local_addr=(host, port))
        except OSError as exc:
            raise OSError(exc.errno, f"cannot bind UDP {host}:{port} ({exc.strerror})") from exc
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        mux._transport, mux._protocol = transport, protocol
        bound = transport.get_extra_info("sockname")
        mux.address = (str(bound[0]), int(bound[1]))
        log.info("media UDP socket open", extra={"address": f"{bound[0]}:{bound[1]}"})
        return mux

    # -- connections -------------------------------------------------------------
    def attach(self, ufrag: str, protocol: asyncio.DatagramProtocol, *, key: bytes | None = None,
               new_ufrag: Callable[[], str] | None = None) -> MuxEndpoint:
        """Route to ``protocol`` what is meant for ``ufrag``; it gets its endpoint at once.

        With ``key`` (the connection's ICE password), only checks whose
        MESSAGE-INTEGRITY it verifies move a remote address to the connection; the
        others are still delivered (for the connection to refuse).

        A ufrag another connection has is refused (:class:`UfragInUse`), or, with
        ``new_ufrag``, replaced by a fresh one: the endpoint's ``ufrag`` is the one
        the connection must then announce.
        """
        if self.closed:
            raise ConnectionError("the media UDP socket is closed")
        for _ in range(_UFRAG_ATTEMPTS):
            if ufrag in self._by_ufrag and new_ufrag is not None:
                ufrag = new_ufrag()
        if not ufrag or ":" in ufrag:
            raise ValueError(f"unusable ufrag {ufrag!r}")
        if ufrag in self._by_ufrag:
            raise UfragInUse(ufrag)
        endpoint = MuxEndpoint(self, ufrag, protocol, key)
        self._by_ufrag[ufrag] = endpoint
        protocol.connection_made(endpoint)
        return endpoint

    @property
    def datagram_transport(self) -> asyncio.DatagramTransport | None:
        """The shared socket's asyncio transport (None once closed): the fast path sends
        a frame's packets on its socket directly when nothing is queued on it."""
        return None if self.closed else self._transport

    def owner(self, addr: Address) -> MuxEndpoint | None:
        """The endpoint datagrams from ``addr`` go to (other than STUN)."""
        return self._by_addr.get(addr)

    def endpoint(self, ufrag: str) -> MuxEndpoint | None:
        return self._by_ufrag.get(ufrag)

    @property
    def route_counts(self) -> dict[str, int]:
        """How many ufrags, addresses and pending transactions are routed."""
        return {"ufrags": len(self._by_ufrag), "addresses": len(self._by_addr),
                "transactions": len(self._by_transaction)}

    # -- receiving -----------------------------------------------------------------
    def _receive(self, data: bytes, addr: Any) -> None:
        self.received += 1
        if len(addr) != 2:
            addr = (addr[0], addr[1])  # IPv6 four-tuple
        if data and data[0] > 3:
            endpoint = self._by_addr.get(addr)
        else:
            endpoint = self._stun_target(data, addr)
        if endpoint is None:
            self.dropped += 1
        else:
            endpoint.deliver(data, addr)

    def _stun_target(self, data: bytes, addr: Address) -> MuxEndpoint | None:
        kind = stun_class(data)
        if kind == 0:
            ufrag = stun_local_ufrag(data)
            endpoint = self._by_ufrag.get(ufrag) if ufrag is not None else None
            if endpoint is not None and not endpoint.addresses.get(addr) and (
                    endpoint.key is None or stun_integrity_ok(data, endpoint.key)):
                self._claim(addr, endpoint)
            return endpoint
        if kind is not None and kind >= 2:
            endpoint = self._by_transaction.pop(data[8:20], None)
            if endpoint is not None:
                endpoint.transactions.discard(data[8:20])
                return endpoint
        return self._by_addr.get(addr)

    def _claim(self, addr: Address, endpoint: MuxEndpoint) -> None:
        """A check from ``addr`` named (and was signed for) ``endpoint``: the address is its."""
        previous = self._by_addr.get(addr)
        if previous is not None and previous is not endpoint:
            del previous.addresses[addr]
            log.debug("remote address moved between connections",
                      extra={"address": f"{addr[0]}:{addr[1]}"})
        self._route(addr, endpoint, confirmed=True)

    def _route(self, addr: Address, endpoint: MuxEndpoint, *, confirmed: bool) -> None:
        if addr not in endpoint.addresses and len(endpoint.addresses) >= _MAX_ADDRESSES:
            oldest = next(iter(endpoint.addresses))
            del endpoint.addresses[oldest]
            del self._by_addr[oldest]
        self._by_addr[addr] = endpoint
        endpoint.addresses[addr] = confirmed

    # -- sending -------------------------------------------------------------------
    def _learn(self, addr: Address, endpoint: MuxEndpoint) -> None:
        """``endpoint`` sends to ``addr``: route replies to it unless another owns it."""
        if addr not in self._by_addr:
            self._route(addr, endpoint, confirmed=False)

    def _expect_response(self, transaction: bytes, endpoint: MuxEndpoint) -> None:
        if transaction in self._by_transaction:
            return  # a retransmission
        if len(self._by_transaction) >= _MAX_TRANSACTIONS:
            oldest = next(iter(self._by_transaction))
            self._by_transaction.pop(oldest).transactions.discard(oldest)
        self._by_transaction[transaction] = endpoint
        endpoint.transactions.add(transaction)

    def _send(self, data: bytes, addr: Address) -> None:
        if self._transport is not None and not self.closed:
            self._transport.sendto(data, addr)

    # -- closing -------------------------------------------------------------------
    def _detach(self, endpoint: MuxEndpoint) -> None:
        if self._by_ufrag.get(endpoint.ufrag) is endpoint:
            del self._by_ufrag[endpoint.ufrag]
        for addr in endpoint.addresses:
            if self._by_addr.get(addr) is endpoint:
                del self._by_addr[addr]
        for transaction in endpoint.transactions:
            if self._by_transaction.get(transaction) is endpoint:
                del self._by_transaction[transaction]
        endpoint.addresses.clear()
        endpoint.transactions.clear()

    async def close(self) -> None:
        """Close every endpoint (their protocols see ``connection_lost``), then the socket."""
        if self.closed:
            return
        for endpoint in list(self._by_ufrag.values()):
            endpoint.close()
        self.closed = True
        if self._transport is not None and self._protocol is not None:
            self._transport.close()
            await self._protocol.closed
        log.info("media UDP socket closed",
                 extra={"received": self.received, "dropped": self.dropped})


@dataclass(frozen=True, kw_only=True)
class NodeMedia:
    """What the node's peer connections announce and where they send from."""

    mux: UdpMux | None
    """The shared socket, or None: a socket per connection (aioice's own)."""
    announced_address: str = ""
    """Put in host candidates instead of the local address (empty: the local one)."""
    host: str = ""
    """The address host candidates on the mux name when none is announced (empty: the
    first address the ICE library finds)."""


_current: NodeMedia | None = None


def current() -> NodeMedia | None:
    """The running node's media socket settings; None when nothing differs from aioice's."""
    return _current


def use_node_media(pc: RTCPeerConnection) -> None:
    """Make ``pc`` (one of the SFU's) gather on the node's media socket, if it has one."""
    if _current is not None:
        hooks.mark_peer_connection(pc, _current)


def bind_host(config: SfuConfig) -> str:
    """Where the mux binds: the first of ``sfu.ice_addresses``, else every IPv4 interface."""
    return config.ice_addresses[0] if config.ice_addresses else "0.0.0.0"


@contextlib.asynccontextmanager
async def node_media_socket(config: SfuConfig) -> AsyncIterator[NodeMedia | None]:
    """Own the node's media socket from start to stop (one node per process).

    With ``sfu.udp_port`` set, every peer connection created meanwhile shares
    one UDP socket on that port; with ``sfu.announced_address`` set, host
    candidates carry that address. Neither set: nothing changes.
    """
    global _current
    if not config.udp_port and not config.announced_address:
        yield None
        return
    if _current is not None:
        raise RuntimeError("the process already runs a node's media socket")
    hooks.install_node_media()
    mux = None
    if config.udp_port:
        mux = await UdpMux.open(bind_host(config), config.udp_port)
    host = mux.address[0] if mux is not None else ""
    unspecified = not host or ipaddress.ip_address(host).is_unspecified
    _current = NodeMedia(mux=mux, announced_address=config.announced_address,
                         host="" if unspecified else host)
    try:
        yield _current
    finally:
        _current = None
        if mux is not None:
            await mux.close()
