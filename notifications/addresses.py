"""Which addresses an outgoing webhook may reach (reference §11.4).

A subscription's URL is written by an operator, but the name in it is
resolved by DNS, which someone else may control: a name that resolves to a
loopback, private or link-local address would let a webhook reach services
that only trust the local network (a metadata service, an admin port). So a
subscription reaches only *public* addresses unless it says
``allow_private = true``: the configuration refuses a URL whose host is such
an address written literally (:func:`url_problem`), and the webhook client
checks every address a name resolves to when it connects
(:mod:`notifications.clients.webhooks`), so that a DNS answer that changes
later is caught too.

"Public" is :attr:`ipaddress.IPv4Address.is_global` (not private, loopback,
link-local, shared 100.64/10, reserved or unspecified) and not multicast, for
the address itself and for an IPv4 address carried inside an IPv6 one
(``::ffff:127.0.0.1``, 6to4 ``2002:7f00:1::``).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _embedded(address: IPAddress) -> IPAddress | None:
    """The IPv4 address an IPv6 address carries (mapped or 6to4), if any."""
    if isinstance(address, ipaddress.IPv6Address):
        return address.ipv4_mapped or address.sixtofour
    return None


def is_public(address: IPAddress | str) -> bool:
    """Whether a webhook may reach ``address`` without ``allow_private``."""
    if isinstance(address, str):
        address = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0
    for candidate in (address, _embedded(address)):
        if candidate is not None and (not candidate.is_global or candidate.is_multicast):
            return False
    return True


def literal_address(host: str) -> IPAddress | None:
    """The IP address ``host`` is written as, or None for a name."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def url_problem(url: str, allow_private: bool) -> str | None:
    """Why ``url`` cannot be a subscription's URL, or None when it can.

    Names are not resolved here (that is done when connecting); an address
    written in the URL is checked now.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        return f"not a URL ({error})"
    if parts.scheme not in ("http", "https"):
        return "must start with https:// (or http:// with allow_private = true)"
    if not parts.hostname:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        return "must not hold a user name or password (the signature authenticates the daemon)"
    if port == 0:
        return "has port 0"
    if parts.scheme == "http" and not allow_private:
        return (
            "plain http is allowed only with allow_private = true (the notification "
            "and its signature would cross the network in clear)"
        )
    address = literal_address(parts.hostname)
    if address is not None and not allow_private and not is_public(address):
        return (
            f"{address} is not a public address (loopback, private, link-local…): "
            "allowed only with allow_private = true"
        )
    return None
