"""The HTTP client of outgoing webhooks: the addresses of a name checked when connecting.

A subscription reaches only public addresses unless it allows private ones
(:mod:`notifications.addresses`). The configuration refuses an address
written in a URL; a *name* is checked here, each time a connection is made:
the agent connects through :class:`CheckedEndpointFactory`, whose endpoints
resolve the name, check every address it resolves to, and connect only to
those checked addresses (never resolving the name a second time, so that a
DNS answer cannot change between the check and the connection). A name with
an address that is not public is refused before any connection is attempted,
with :class:`~notifications.clients.http.AddressRefused`.

Written with Twisted's own pieces: :class:`~twisted.internet.endpoints.HostnameEndpoint`
connects (several addresses raced, a timeout per attempt, cancellation), and
it takes its name resolver from its reactor, so it is given the reactor
behind a thin wrapper whose resolver checks the addresses (Twisted has no
per-endpoint resolver argument). TLS is verified for the URL's host name, as
:class:`~twisted.web.client.BrowserLikePolicyForHTTPS` does for any agent.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IHostnameResolver,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
)
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from ..addresses import is_public
from .http import HTTP, AddressRefused


@implementer(IResolutionReceiver)
class _CheckingReceiver:
    """Collects the addresses of a name, and hands them on only if all are allowed."""

    def __init__(self, receiver, host: str, allow_private: bool, refusals: list[str]):
        self.receiver = receiver
        self.host = host
        self.allow_private = allow_private
        self.refusals = refusals
        self.addresses: list[Any] = []

    def resolutionBegan(self, resolution) -> None:
        self.receiver.resolutionBegan(resolution)

    def addressResolved(self, address) -> None:
        self.addresses.append(address)

    def resolutionComplete(self) -> None:
        private = [a.host for a in self.addresses if not is_public(a.host)]
        if private and not self.allow_private:
            # One private address is enough to refuse: a name that mixes public
            # and private answers is how DNS rebinding hides.
            self.refusals.append(
                f"{self.host} resolves to {private[0]}, which is not a public address "
                "(allow_private is false)"
            )
        else:
            for address in self.addresses:
                self.receiver.addressResolved(address)
        self.receiver.resolutionComplete()


@implementer(IHostnameResolver)
class _CheckingResolver:
    """The reactor's resolver, each answer checked by a :class:`_CheckingReceiver`."""

    def __init__(self, resolver, allow_private: bool):
        self.resolver = resolver
        self.allow_private = allow_private
        #: Why the last resolutions were refused.
        self.refusals: list[str] = []

    def resolveHostName(
        self,
        resolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes=None,
        transportSemantics: str = "TCP",
    ):
        checking = _CheckingReceiver(
            resolutionReceiver, hostName, self.allow_private, self.refusals
        )
        return self.resolver.resolveHostName(
            checking, hostName, portNumber, addressTypes, transportSemantics
        )


@implementer(IReactorPluggableNameResolver)
class _ResolvingWith:
    """The reactor, whose ``nameResolver`` is another one (what HostnameEndpoint reads)."""

    def __init__(self, reactor, resolver):
        self._reactor = reactor
        self.nameResolver = resolver

    def installNameResolver(self, resolver):
        raise NotImplementedError("this reactor's resolver is fixed")

    def __getattr__(self, name: str):
        return getattr(self._reactor, name)


class _CheckedEndpoint:
    """A HostnameEndpoint whose refused resolution fails with :class:`AddressRefused`."""

    def __init__(self, endpoint, resolver: _CheckingResolver):
        self.endpoint = endpoint
        self.resolver = resolver

    def connect(self, factory) -> defer.Deferred:
        self.resolver.refusals.clear()

        def refused(failure):
            # The endpoint saw no address at all ("no results"): say why.
            if self.resolver.refusals:
                raise AddressRefused(self.resolver.refusals[-1])
            return failure

        return self.endpoint.connect(factory).addErrback(refused)


@implementer(IAgentEndpointFactory)
class CheckedEndpointFactory:
    """Endpoints for an agent that connect only to allowed addresses (see the module)."""

    def __init__(
        self,
        reactor,
        allow_private: bool,
        tls_policy=None,
        connect_timeout: float = 10.0,
    ):
        self.reactor = reactor
        self.allow_private = allow_private
        self.tls_policy = tls_policy or BrowserLikePolicyForHTTPS()
        self.connect_timeout = connect_timeout

    def endpointForURI(self, uri):
        resolver = _CheckingResolver(self.reactor.nameResolver, self.allow_private)
        host = uri.host.decode("ascii")
        endpoint = HostnameEndpoint(
            _ResolvingWith(self.reactor, resolver), host, uri.port, timeout=self.connect_timeout
        )
        if uri.scheme == b"https":
            creator = self.tls_policy.creatorForNetloc(uri.host, uri.port)
            endpoint = wrapClientTLS(creator, endpoint)
        return _CheckedEndpoint(endpoint, resolver)


def webhook_client(
    reactor, allow_private: bool, timeout: float, tls_policy=None, persistent: bool = True
) -> HTTP:
    """The HTTP client of one subscription: the daemon's client, connecting through
    :class:`CheckedEndpointFactory` (each subscription has its own connection pool, so
    that a connection one allowed to a private address is never reused by another)."""
    factory = CheckedEndpointFactory(
        reactor, allow_private, tls_policy=tls_policy, connect_timeout=timeout
    )
    return HTTP(reactor, tls_policy=tls_policy, persistent=persistent, endpoint_factory=factory)
