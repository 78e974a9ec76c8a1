"""HTTP-level protections of the gates: body size, slow clients, idle connections.

twisted.web reads a whole request body into memory (or a temporary file)
before any resource sees it, and only resets an idle timer on each byte: a
client trickling a byte every few seconds keeps a connection forever. These
subclasses, plugged into the :class:`~twisted.web.server.Site`, refuse a body
over the limit as soon as its length is known (or as soon as a chunked body
grows past it) and give every request a deadline to arrive in full.

:class:`Leaf` is the base of the daemon's resources that have no children.
"""

from __future__ import annotations

from io import BytesIO

from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.pages import notFound
from twisted.web.resource import Resource


def _raw_response(status: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"Connection: close\r\n\r\n" + body
    )


# The texts of the plain answers, here so that the OpenAPI document (which
# the web site serves, and so cannot import) says them as they are.
PAYLOAD_TOO_LARGE = "Payload too large.\n"
REQUEST_TIMEOUT = "Request timeout.\n"
HEADERS_TOO_LARGE = "Request line or headers too large.\n"
#: What a GET on a gate says.
POST_ONLY = "This gate takes POST requests: see the documentation of the notifications center."
#: ``GET /status``: monitoring probes depend on this exact body.
ALIVE = "ALIVE"
#: What a gate answers (503) while the daemon stops.
SHUTTING_DOWN = "The notifications center is shutting down.\n"
#: What a call past ``[gate] max_in_progress`` gets (503, with Retry-After).
TOO_MANY_CALLS = "Too many calls in progress, retry later.\n"
#: The first line of a 415 answer.
UNSUPPORTED_MEDIA_TYPE = "Unsupported media type."
#: A gate call that failed for a reason of ours (logged, never described).
INTERNAL_ERROR = "Internal error.\n"

TOO_LARGE = _raw_response(b"413 Payload Too Large", PAYLOAD_TOO_LARGE.encode())
TOO_SLOW = _raw_response(b"408 Request Timeout", REQUEST_TIMEOUT.encode())
TOO_LONG = _raw_response(b"431 Request Header Fields Too Large", HEADERS_TOO_LARGE.encode())


class Leaf(Resource):
    """A resource with no children: anything below it is 404."""

    def getChild(self, path, request):
        return notFound()


class GateRequest(server.Request):
    """A request that refuses a body over ``site.max_body_size`` without reading it.

    A gate call also carries what its handler (:class:`~.web.CallHandler`)
    records of it: its id, when its gate was given the body, and whether the
    handler logged the call's own line (the access log then says nothing).
    """

    log = Logger()
    _refused = False
    _received = 0
    #: The call's id (``X-Request-Id``, the report's ``requestId``).
    request_id = "-"
    #: When the gate was given the body (reactor seconds), for the latency metric.
    call_started: float | None = None
    #: Whether the call's line was logged: the access log leaves it out then.
    call_logged = False

    def __init__(self, *args, **kwargs):
        # The gates read bodies themselves: twisted.web need not parse every
        # POST's content type and form fields into request.args (a measured
        # 7 % of the reactor thread's time under load).
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(*args, **kwargs)

    def first_headers(self) -> dict[str, str]:
        """Each header's first value, by its name in lower case (a gate call's headers)."""
        return {
            name.decode("latin-1").lower(): values[0].decode("latin-1")
            for name, values in self.requestHeaders.getAllRawHeaders()
        }

    def _limit(self) -> int | None:
        site = getattr(self.channel, "site", None)
        return getattr(site, "max_body_size", None)

    def gotLength(self, length):
        limit = self._limit()
        if length is not None and limit is not None and length > limit:
            self._refuse(length)
            return
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._received += len(data)
        limit = self._limit()
        if limit is not None and self._received > limit:
            self._refuse(self._received)
            return
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        if self._refused:
            return
        super().requestReceived(command, path, version)

    def _refuse(self, size: int) -> None:
        # The response goes out at once and the connection closes: the rest
        # of the body is never read.
        self._refused = True
        self.content = BytesIO()
        self.log.info(
            "Refused a request body of {size} bytes or more (limit {limit}) from {peer}",
            size=size,
            limit=self._limit(),
            peer=str(self.channel.transport.getPeer()),
        )
        self.channel.transport.write(TOO_LARGE)
        self.channel.loseConnection()
        site = getattr(self.channel, "site", None)
        counted = getattr(site, "refused_while_arriving", None)
        # The request line is on the channel until the body has arrived (which
        # it never will): twisted.web keeps it there, as _path.
        path = getattr(self.channel, "_path", None)
        if counted is not None and isinstance(path, bytes):
            counted(path)


class GateChannel(http.HTTPChannel):
    """An HTTP channel that gives each request ``site.request_timeout`` seconds to arrive."""

    log = Logger()
    _deadline = None
    _receiving = False
    #: The time left to the first request, when it began elsewhere (a connection
    #: handed over by the short path, notifications/gatepath.py).
    first_request_left: float | None = None

    def dataReceived(self, data):
        if not self._receiving:
            self._receiving = True
            timeout = getattr(getattr(self, "site", None), "request_timeout", None)
            if self.first_request_left is not None:
                timeout, self.first_request_left = max(self.first_request_left, 0.001), None
            if timeout:
                self._deadline = self.callLater(timeout, self._too_slow)
        super().dataReceived(data)

    def allContentReceived(self):
        self._receiving = False
        self._cancel_deadline()
        super().allContentReceived()

    def connectionLost(self, reason):
        self._cancel_deadline()
        super().connectionLost(reason)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def lineLengthExceeded(self, line):
        # twisted.web closes such a connection without a word; say why.
        self.transport.write(TOO_LONG)
        return super().lineLengthExceeded(line)

    def _too_slow(self) -> None:
        self._deadline = None
        self.log.info(
            "Closed a connection whose request did not arrive in time: {peer}",
            peer=str(self.transport.getPeer()),
        )
        self.transport.write(TOO_SLOW)
        self.loseConnection()


class GateSite(server.Site):
    """The daemon's Site: gate requests and channels, limits from the configuration."""

    requestFactory = GateRequest
    protocol = GateChannel

    #: Told the path of a call whose body was refused as too large while arriving.
    refused_while_arriving = None

    def __init__(
        self, resource, max_body_size: int, request_timeout: float, idle_timeout: float, **kwargs
    ):
        super().__init__(resource, timeout=idle_timeout, **kwargs)
        self.max_body_size = max_body_size
        self.request_timeout = request_timeout

    def log(self, request) -> None:
        # A gate call has its own line (with its request id): once is enough.
        if not request.call_logged:
            super().log(request)
