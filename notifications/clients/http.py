"""The one HTTP client of the daemon, and the errors every outgoing call maps to.

:class:`HTTP` is built once (in ``makeService``, or by a command) and passed
down: one treq :class:`~treq.client.HTTPClient` over one
:class:`~twisted.web.client.Agent` with one persistent
:class:`~twisted.web.client.HTTPConnectionPool`, so that the connections to
Conduit, Docker Hub and Mailgun are reused, and the default TLS policy
(:class:`~twisted.web.client.BrowserLikePolicyForHTTPS`, which checks the
certificate and, with ``service_identity``, the host name).

:meth:`HTTP.request` bounds a whole call (connection, request, answer, body)
by a timeout and turns every failure into a :class:`RemoteServiceError`
whose message is safe to show a caller: it names the service and its origin
(scheme, host, port) and never the path or the query, where tokens live.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from OpenSSL import SSL
from treq.client import HTTPClient
from twisted.internet import defer, error
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss

from ..report import side_action

#: The largest answer body read (a projects map of 1000 projects is ~1 MiB).
MAX_BODY = 16 * 1024 * 1024


class RemoteServiceError(Exception):
    """An outgoing call failed; the message is for callers and holds no secret."""


class ServiceTimeout(RemoteServiceError):
    """No complete answer within the timeout."""


class ServiceUnreachable(RemoteServiceError):
    """No connection, a TLS failure, or the connection lost before the answer."""


class AddressRefused(ServiceUnreachable):
    """The host resolves to an address the call may not reach (a private one)."""


class ServiceHTTPError(RemoteServiceError):
    """An answer with an unexpected HTTP status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class MalformedAnswer(RemoteServiceError):
    """An answer that is not what the API documents (not JSON, wrong shape, too large)."""


class InternalError(Exception):
    """A side action failed for a reason of ours (logged); the report says no more."""


def unexpected(failure: Failure, log, action: str, **fields: Any) -> dict:
    """Errback of a side action: a bug is logged, and reported without its details."""
    log.failure("{action} failed unexpectedly", failure, action=action)
    return side_action(action, InternalError("internal error"), **fields)


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL: what messages may say of it."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}"


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every secret replaced by ``…``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "…")
    return text


@dataclass(frozen=True)
class Answer:
    """A complete HTTP answer."""

    status: int
    body: bytes
    what: str

    def json(self) -> Any:
        """The body parsed as JSON, else :class:`MalformedAnswer`."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise MalformedAnswer(f"{self.what}: the answer is not JSON") from None

    def check_status(self) -> Answer:
        """Itself when the status is 2xx, else :class:`ServiceHTTPError`."""
        if not 200 <= self.status < 300:
            raise ServiceHTTPError(f"{self.what}: HTTP {self.status}", self.status)
        return self


class _BodyTooLarge(Exception):
    pass


class _Body(Protocol):
    """Collects a body up to :data:`MAX_BODY`; cancelling drops the connection."""

    def __init__(self, finished: defer.Deferred, limit: int):
        self.finished = finished
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            self.transport.stopProducing()
            if not self.finished.called:
                self.finished.errback(_BodyTooLarge())
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure) -> None:
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.chunks))
        else:
            self.finished.errback(reason)


def _read_body(response, limit: int) -> defer.Deferred:
    protocol: _Body

    def cancel(_: defer.Deferred) -> None:
        if protocol.transport is not None:
            protocol.transport.stopProducing()

    finished: defer.Deferred = defer.Deferred(cancel)
    protocol = _Body(finished, limit)
    response.deliverBody(protocol)
    return finished


_CANCELLED = (defer.CancelledError, defer.TimeoutError, error.ConnectingCancelledError)

#: What a failed call may raise; anything else is a bug and is not disguised.
_NETWORK = (
    *_CANCELLED,
    _BodyTooLarge,
    OSError,  # DNSLookupError and the socket errors
    error.ConnectError,
    error.ConnectionLost,
    error.ConnectionDone,
    ResponseNeverReceived,
    ResponseFailed,
    RequestTransmissionFailed,
    SSL.Error,
)


def _describe(failure: Failure) -> str:
    """A short reason for a failed connection, without anything of the URL's path."""
    if failure.check(error.ConnectionRefusedError):
        return "connection refused"
    if failure.check(error.DNSLookupError):
        return "host name not found"
    if failure.check(error.TimeoutError):
        return "connection timed out"
    if failure.check(error.ConnectionLost, error.ConnectionDone):
        return "connection lost"
    name = type(failure.value).__name__
    module = type(failure.value).__module__
    if module.startswith(("OpenSSL", "service_identity")) or "SSL" in name or "TLS" in name:
        return "TLS handshake failed (certificate not trusted or not for this host?)"
    return name


def _reasons(failure: Failure) -> list[Failure]:
    # Agent wraps the real causes (ResponseNeverReceived, ResponseFailed…).
    reasons = getattr(failure.value, "reasons", None)
    if isinstance(reasons, list) and reasons:
        return [reason for reason in reasons if isinstance(reason, Failure)] or [failure]
    return [failure]


def _mapped(failure: Failure, what: str, timeout: float) -> Failure:
    if failure.check(AddressRefused):
        # Raised by the endpoint, which does not know what the call is.
        return Failure(AddressRefused(f"{what}: {failure.value}"))
    if failure.check(RemoteServiceError) or not failure.check(*_NETWORK):
        return failure
    if failure.check(_BodyTooLarge):
        return Failure(MalformedAnswer(f"{what}: the answer is larger than {MAX_BODY} bytes"))
    reasons = _reasons(failure)
    if any(reason.check(*_CANCELLED) for reason in reasons):
        return Failure(ServiceTimeout(f"{what}: no answer within {timeout:g} s"))
    return Failure(ServiceUnreachable(f"{what}: {_describe(reasons[0])}"))


class HTTP:
    """The daemon's HTTP client: one pool, one agent, one treq client, one reactor.

    Made without a pool: :meth:`start` makes it (the daemon's clients service
    does, once running; a command's first call does), :meth:`close` closes its
    connections.

    ``endpoint_factory`` (an ``IAgentEndpointFactory``) replaces the agent's own
    way of connecting: the outgoing webhooks' client checks the addresses a
    name resolves to before it connects (:mod:`notifications.clients.webhooks`);
    TLS is then that factory's to set up.
    """

    def __init__(self, reactor, tls_policy=None, persistent: bool = True, endpoint_factory=None):
        self.reactor = reactor
        self.tls_policy = tls_policy or BrowserLikePolicyForHTTPS()
        self.persistent = persistent
        self.endpoint_factory = endpoint_factory
        self.pool: HTTPConnectionPool | None = None
        self.client: HTTPClient | None = None

    def start(self) -> None:
        """Make the connection pool, the agent and the treq client (once)."""
        if self.client is None:
            self.pool = HTTPConnectionPool(self.reactor, persistent=self.persistent)
            if self.endpoint_factory is not None:
                agent = Agent.usingEndpointFactory(
                    self.reactor, self.endpoint_factory, pool=self.pool
                )
            else:
                agent = Agent(self.reactor, contextFactory=self.tls_policy, pool=self.pool)
            self.client = HTTPClient(agent)

    def request(
        self, what: str, method: str, url: str, timeout: float, **kwargs: Any
    ) -> defer.Deferred:
        """Make a call and read its whole answer; fires with an :class:`Answer`.

        ``what`` names the call in error messages (say ``Docker Hub at
        https://registry.hub.docker.com``). Everything, body included, is
        bounded by ``timeout`` seconds; any failure is a
        :class:`RemoteServiceError`. Redirections are not followed: none of
        the APIs called needs them, and following one could carry a
        credential elsewhere.
        """
        self.start()
        d = self.client.request(
            method,
            url,
            timeout=timeout,
            reactor=self.reactor,
            allow_redirects=False,
            unbuffered=True,
            **kwargs,
        )
        d.addCallback(
            lambda response: _read_body(response, MAX_BODY).addCallback(
                lambda body: Answer(response.code, body, what)
            )
        )
        # treq's timeout covers the answer's head; this one covers the body too.
        d.addTimeout(timeout, self.reactor)
        d.addErrback(_mapped, what, timeout)
        return d

    def close(self) -> defer.Deferred:
        """Close the idle connections (at shutdown); the next call makes a new pool."""
        pool, self.pool, self.client = self.pool, None, None
        if pool is None:
            return defer.succeed(None)
        return pool.closeCachedConnections()
