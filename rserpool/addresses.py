"""Which client addresses count as one for per-address limits.

An IPv4 address is its own key.  An IPv6 address is keyed by its network
prefix (``/64`` by default: a site gets at least one /64, so one host can
use millions of addresses inside it), an IPv4-mapped IPv6 address
(``::ffff:192.0.2.1``) by the IPv4 address it maps.  A text that is not an
IP address (a UNIX socket path, an unknown peer) is its own key.

Pure; results are memoised (a bounded cache).
"""

from __future__ import annotations

import functools
import ipaddress

__all__ = ["DEFAULT_IPV6_PREFIX", "address_key"]

#: Prefix length by which IPv6 addresses are accounted.
DEFAULT_IPV6_PREFIX = 64


@functools.lru_cache(maxsize=8192)
def _ipv6_key(host: str, prefix: int) -> str:
    try:
        address = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    mapped = address.ipv4_mapped
    if mapped is not None:
        return str(mapped)
    network = ipaddress.IPv6Network((address, prefix), strict=False)
    return str(network)


def address_key(host: str, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """The key ``host`` is counted under: ``"192.0.2.1"``, ``"2001:db8:1:2::/64"``."""
    if ":" not in host:
        return host
    if not 0 <= ipv6_prefix <= 128:
        raise ValueError("ipv6_prefix must be 0-128")
    return _ipv6_key(host, ipv6_prefix)
