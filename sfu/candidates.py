"""Which remote ICE candidates the node may send connectivity checks to.

A client names its candidates' addresses itself, and the node sends STUN to
each; without a filter a client can point the node at any address it can
reach (the cloud metadata service at 169.254.169.254, a multicast group).
Like Janus's ``ice_ignore_list``, a candidate is used only when its address is
in no ``deny`` network and, when ``allow`` is not empty, in an ``allow``
network. Denied candidates are dropped silently (logged at debug level).
mDNS names (``*.local``, RFC 8828) pass: they resolve on the node's own link
only. Any other host name is dropped (aioice would resolve it through DNS).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_DENY: tuple[str, ...] = (
    "0.0.0.0/8",        # "this network", unspecified
    "169.254.0.0/16",   # IPv4 link-local, with the cloud metadata address 169.254.169.254
    "224.0.0.0/4",      # IPv4 multicast
    "255.255.255.255/32",  # limited broadcast
    "::/128",           # IPv6 unspecified
    "fe80::/10",        # IPv6 link-local
    "ff00::/8",         # IPv6 multicast
)
"""Networks refused when the configuration names none."""


def parse_networks(values: tuple[str, ...], setting: str) -> tuple[IpNetwork, ...]:
    """``("10.0.0.0/8", "fd00::1")`` → networks; ValueError naming the setting and entry."""
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{setting}: {value!r} is not a network ({exc})") from exc
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class CandidateFilter:
    allow: tuple[IpNetwork, ...] = ()
    """Empty: every address not denied."""
    deny: tuple[IpNetwork, ...] = ()

    @classmethod
    def of(cls, allow: tuple[str, ...], deny: tuple[str, ...]) -> CandidateFilter:
        return cls(allow=parse_networks(allow, "candidate_allow"),
                   deny=parse_networks(deny, "candidate_deny"))

    def allows(self, host: str) -> bool:
        """Whether STUN may be sent to this candidate address (IP literal or mDNS name)."""
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return host.lower().endswith(".local") and not self.allow
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
        if any(address in net for net in self.deny):
            return False
        return not self.allow or any(address in net for net in self.allow)
