"""The calling peer's address, checked against its node's configured host (names resolved).

The calling AE title alone is no credential: anyone who learns it could associate. By default
an association naming a node is accepted only from an address the node's `host` resolves to
(`getaddrinfo`: a name may have several addresses, IPv4 and IPv6); a node behind NAT or a pool
opts out with `any_address`. The strong form is DICOM TLS with client certificates (PS3.15
Annex B.1, `dimse.tls`).
"""

from __future__ import annotations

import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> IPAddress:
    """An address as compared: without an IPv6 zone, an IPv4-mapped IPv6 address as IPv4."""
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def addresses_of(host: str) -> frozenset[IPAddress]:
    """Every address `host` names now; empty when it does not resolve."""
    try:
        found = socket.getaddrinfo(host.strip(), None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError, ValueError):
        return frozenset()
    return frozenset(_address(str(info[4][0])) for info in found)


def peer_matches(host: str, peer: str) -> bool:
    """Whether the peer's address is one of those `host` resolves to."""
    try:
        address = _address(peer)
    except ValueError:
        return False
    return address in addresses_of(host)
