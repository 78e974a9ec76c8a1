"""The gate calls' short HTTP path: the common webhook call without twisted.web's Request.

Most calls a gateway takes look alike: ``POST /gate/<Gate>/<door>``, HTTP/1.1,
a ``Content-Length`` body under the limit, on a kept-alive connection.
twisted.web's generic channel and :class:`~twisted.web.server.Request` spent
about a third of such a call's time in the reactor thread (the profile of
``benchmarks/``: header lines parsed one by one in Python, the resource tree
walked, a new resource per door, the transport paused and resumed around each
request). :class:`GateCallProtocol` parses the head of each request with
httptools (llhttp, Node.js' parser, in C) and, when the request is such a
call, hands it straight to the :class:`~notifications.web.CallHandler` the
resource tree would have reached, with a :class:`GateCallRequest` that offers
what the handler uses of a request.

Any other request (another path or method, HTTP/1.0, a chunked body, ``Expect``,
a body over the limit, a head that does not parse or is too long) is not
answered here: the connection is handed, from the first byte of that request
on, to twisted.web's own channel (:class:`~notifications.http.GateChannel`),
which serves it and the rest of the connection as it serves every other port.
The hand-over uses only public protocol calls (``makeConnection``,
``dataReceived``, ``connectionLost``): what the channel sees is a connection
whose first bytes are that request. The limits of :mod:`notifications.http`
(request deadline, idle timeout, body size) hold on this path too.

Written by hand because no library frames HTTP/1.1 for a Twisted protocol
except twisted.web itself; the parsing is httptools', and this module only
decides whether a parsed head is the common case.
"""

from __future__ import annotations

import time
from io import BytesIO
from urllib.parse import unquote_to_bytes

import httptools
from twisted.internet import protocol, tcp
from twisted.internet.interfaces import ITCPTransport
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from twisted.web import http, server

from .http import INTERNAL_ERROR, TOO_SLOW, GateSite

#: The longest head (request line and headers) taken here, as twisted.web's
#: channel takes (its ``totalHeadersSize``); a longer one is handed over.
MAX_HEAD = 16384
#: The most header lines taken here (twisted.web's ``maxHeaders``).
MAX_HEADERS = 500
#: Bytes buffered beyond the call being answered before the connection is
#: paused (a client sending its next requests without waiting).
MAX_AHEAD = 65536

_SERVER = b"Server: " + server.version + b"\r\n"


class _Head:
    """What httptools' callbacks collect of a request's head."""

    __slots__ = ("complete", "count", "headers", "url")

    def __init__(self):
        self.url = b""
        self.headers: dict[bytes, list[bytes]] = {}
        self.count = 0
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.count += 1
        self.headers.setdefault(name.lower(), []).append(value)

    def on_headers_complete(self) -> None:
        self.complete = True


class GateCallRequest:
    """One gate call on the short path: what :class:`~notifications.web.CallHandler`
    reads and writes of a request (the names of :class:`twisted.web.server.Request`'s)."""

    method = b"POST"
    #: The call's id, when it was given to its gate, whether its line was
    #: logged: as on :class:`~notifications.http.GateRequest`.
    request_id = "-"
    call_started: float | None = None
    call_logged = False

    def __init__(self, channel: GateCallProtocol, uri: bytes, headers, body: bytes, keep_alive):
        self.channel = channel
        self.uri = uri
        self._headers = headers
        self.content = BytesIO(body)
        self.keep_alive = keep_alive
        self.code = 200
        #: The answer's headers: by name in lower case, the name as written and the value.
        self._out_headers: dict[bytes, tuple[bytes, bytes]] = {}
        self._body: list[bytes] = []
        self.finished = False
        self._disconnected = False

    def getHeader(self, name: bytes) -> bytes | None:
        values = self._headers.get(name.lower())
        return values[-1] if values else None

    def first_headers(self) -> dict[str, str]:
        """Each header's first value, by its name in lower case."""
        return {
            name.decode("latin-1"): values[0].decode("latin-1")
            for name, values in self._headers.items()
        }

    def setResponseCode(self, code: int) -> None:
        self.code = code

    def setHeader(self, name: bytes, value: bytes) -> None:
        # Written as twisted.web writes them (Content-Type, X-Request-Id).
        self._out_headers[name.lower()] = (name.title(), value)

    def write(self, data: bytes) -> None:
        self._body.append(data)

    def finish(self) -> None:
        """Send the answer, whole, in one write."""
        if self.finished or self._disconnected:
            return
        self.finished = True
        body = b"".join(self._body)
        message = http.RESPONSES.get(self.code, b"")
        head = [
            b"HTTP/1.1 %d %s\r\n" % (self.code, message),
            _SERVER,
            b"Date: " + _date() + b"\r\n",
            *[name + b": " + value + b"\r\n" for name, value in self._out_headers.values()],
        ]
        if b"content-length" not in self._out_headers:
            head.append(b"Content-Length: %d\r\n" % len(body))
        if not self.keep_alive:
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        head.append(body)
        self.channel.answered(self, b"".join(head))


_date_cache: tuple[int, bytes] = (0, b"")


def _date() -> bytes:
    # The Date header changes once a second: formatted once a second.
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, http.datetimeToString(now))
    return _date_cache[1]


class GateCallProtocol(protocol.Protocol, TimeoutMixin):
    """A connection of a gate port: gate calls answered here, anything else by twisted.web."""

    log = Logger()

    def __init__(self, site, addr):
        self.site = site
        self.addr = addr
        # Timers on the site's reactor, as twisted.web's channels have them.
        self.callLater = site.reactor.callLater
        self._buffer = bytearray()
        self._head: tuple | None = None
        self._current: GateCallRequest | None = None
        #: twisted.web's channel, once the connection is handed to it.
        self._channel = None
        #: The request deadline's timer, kept from one request to the next
        #: (moved, not cancelled and made again), and whether a request is
        #: under it now.
        self._deadline = None
        self._deadline_on = False
        self._paused = False
        #: The connection closes after the answer being written (``Connection: close``).
        self._closing = False
        self._taking = False
        #: The plain TCP socket answers are sent on at once, until one of
        #: them does not fit (None: every answer through the transport).
        self._socket = None

    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        if isinstance(self.transport, tcp.Connection) and not getattr(self.transport, "TLS", False):
            self._socket = self.transport.getHandle()
        self.setTimeout(self.site.timeOut)

    def dataReceived(self, data: bytes) -> None:
        if self._channel is not None:
            self._channel.dataReceived(data)
            return
        if self._closing:
            return
        self.resetTimeout()
        self._buffer += data
        if self._current is not None:
            if len(self._buffer) > MAX_AHEAD and not self._paused:
                self._paused = True
                self.transport.pauseProducing()
            return
        if not self._deadline_on:
            self._arm_deadline()
        self._next()

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        if self._channel is not None:
            self._channel.connectionLost(reason)
            return
        self.setTimeout(None)
        self._drop_deadline()
        if self._current is not None:
            self._current._disconnected = True

    def timeoutConnection(self) -> None:
        if self._current is not None:
            # No idle timeout while a call is answered (as twisted.web's
            # channel): its clock starts again.
            self.setTimeout(self.timeOut)
            return
        self.transport.loseConnection()

    # Framing -------------------------------------------------------------------

    def _next(self) -> None:
        """Take the requests in the buffer, one at a time, while each is answered at once."""
        # A loop, not a recursion from each answer: a client may send many
        # requests at once, each refused without waiting for anything.
        if self._taking:
            return
        self._taking = True
        try:
            while (
                self._current is None
                and self._channel is None
                and not self._closing
                and self._buffer
                and self._take()
            ):
                pass
        finally:
            self._taking = False

    def _take(self) -> bool:
        """Take the request at the start of the buffer: answer it here when it is a
        whole gate call (True), wait for more bytes or hand the connection over (False)."""
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    self._hand_over()
                return False
            self._head = self._parse(end + 4)
            if self._head is None:
                self._hand_over()
                return False
        head_length, length, gate, door, uri, headers, keep_alive = self._head
        if len(self._buffer) < head_length + length:
            return False
        body = bytes(self._buffer[head_length : head_length + length])
        del self._buffer[: head_length + length]
        self._head = None
        self._deadline_on = False
        self._answer(gate, door, GateCallRequest(self, uri, headers, body, keep_alive))
        return True

    def _parse(self, head_length: int) -> tuple | None:
        """The head's call, or None when twisted.web should serve this request."""
        if head_length > MAX_HEAD:
            return None
        raw = bytes(self._buffer[:head_length])
        # Lines end in CRLF only: the head then ends where this module and the
        # parser both see its end (a lone LF or CR is left to twisted.web).
        crlf = raw.count(b"\r\n")
        if raw.count(b"\n") != crlf or raw.count(b"\r") != crlf:
            return None
        head = _Head()
        parser = httptools.HttpRequestParser(head)
        try:
            parser.feed_data(raw)
        except httptools.HttpParserError:
            return None
        if (
            not head.complete
            or parser.get_method() != b"POST"
            or parser.get_http_version() != "1.1"
            or head.count > MAX_HEADERS
        ):
            return None
        headers = head.headers
        lengths = headers.get(b"content-length")
        if (
            lengths is None
            or len(lengths) != 1
            or not lengths[0].isdigit()
            or b"transfer-encoding" in headers
            or b"expect" in headers
            or b"upgrade" in headers
        ):
            return None
        length = int(lengths[0])
        if length > self.site.max_body_size:
            return None
        found = self._door(head.url)
        if found is None:
            return None
        gate, door = found
        return head_length, length, gate, door, head.url, headers, parser.should_keep_alive()

    def _door(self, uri: bytes):
        """``(gate, door)`` when the path is a declared gate's door, else None."""
        segments = uri.partition(b"?")[0].split(b"/")
        if len(segments) != 4 or segments[0] != b"" or segments[1] != b"gate":
            return None
        gate = self.site.gates.get(unquote_to_bytes(segments[2]).decode("utf-8", "replace"))
        if gate is None:
            return None
        try:
            door = unquote_to_bytes(segments[3]).decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not door:
            return None
        return gate, door

    # Answering -----------------------------------------------------------------

    def _answer(self, gate, door: str, request: GateCallRequest) -> None:
        self._current = request
        # The idle timer runs on (timeoutConnection spares a call being
        # answered): cancelled and made again, it cost two timers per call.
        try:
            body = self.site.handler.handle(gate, door, request)
        except Exception:
            self.log.failure("Gate call failed", Failure())
            request.code = 500
            request._out_headers = {}
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request._body = []
            body = INTERNAL_ERROR.encode()
        if body is not server.NOT_DONE_YET:
            request.write(body)
            request.finish()

    def answered(self, request: GateCallRequest, data: bytes) -> None:
        """Write a call's answer; go on with the next request, if any."""
        self._send(data)
        self._current = None
        if not request.keep_alive:
            self._closing = True
            self._buffer = bytearray()
            self.transport.loseConnection()
            return
        self.setTimeout(self.site.timeOut)
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()
        if self._buffer:
            if not self._deadline_on:
                self._arm_deadline()
            self._next()

    def _send(self, data: bytes) -> None:
        """Send an answer on the socket now, what does not fit through the transport.

        A transport's ``write`` sends at the reactor's next turn: it asks
        epoll to watch the socket for writing, and once sent to stop
        watching, two system calls and a turn of the loop per answer, for a
        few hundred bytes that the socket's buffer takes at once. While
        every earlier answer of the connection went out whole (so nothing
        waits in the transport's buffer, to be sent before this one), the
        answer is sent here; the rest of a partial send, and every later
        answer, go through the transport, which then keeps the order.
        Written by hand: Twisted's transports have no send-now.
        """
        sock = self._socket
        if sock is not None:
            try:
                sent = sock.send(data)
            except OSError:
                # Full (EAGAIN), or the connection is gone: the transport
                # buffers it and finds out which when it writes.
                sent = 0
            if sent == len(data):
                return
            self._socket = None
            data = data[sent:]
        self.transport.write(data)

    # Hand-over and limits --------------------------------------------------------

    def _hand_over(self) -> None:
        """Give the connection to twisted.web's channel, from the request in the buffer."""
        channel = self.site.twisted_channel(self.addr)
        if self._deadline_on and self._deadline is not None:
            # The request began here: its deadline stays where it was.
            channel.first_request_left = self._deadline.getTime() - self.site.reactor.seconds()
        self._drop_deadline()
        self.setTimeout(None)
        data, self._buffer = bytes(self._buffer), bytearray()
        self._head = None
        self._socket = None
        self._channel = channel
        self._channel.makeConnection(self.transport)
        if data:
            self._channel.dataReceived(data)

    def _arm_deadline(self) -> None:
        """Start the deadline of the request beginning now."""
        timeout = self.site.request_timeout
        if not timeout:
            return
        self._deadline_on = True
        if self._deadline is not None:
            # Mostly later than before: Twisted then notes the new time and
            # moves the call only when the old one comes (earlier: at once).
            self._deadline.reset(timeout)
        else:
            self._deadline = self.callLater(timeout, self._too_slow)

    def _drop_deadline(self) -> None:
        self._deadline_on = False
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self._deadline_on:
            return  # no request under way: the timer was left for the next one
        self._deadline_on = False
        self.log.info(
            "Closed a connection whose request did not arrive in time: {peer}",
            peer=str(self.transport.getPeer()),
        )
        self._send(TOO_SLOW)
        self.transport.loseConnection()


class GateCallSite(GateSite):
    """A gate port's Site: its connections start on the short path of gate calls."""

    def __init__(self, resource, gates: dict, handler, short_path: bool = True, **kwargs):
        """``gates``: the gates by name (those of the ``/gate`` tree); ``handler``:
        the :class:`~notifications.web.CallHandler` their doors call; ``short_path``
        false: every connection goes to twisted.web (``[gate] short_path``)."""
        super().__init__(resource, **kwargs)
        self.gates = gates
        self.handler = handler
        self.short_path = short_path

    def buildProtocol(self, addr):
        if not self.short_path:
            return super().buildProtocol(addr)
        connection = GateCallProtocol(self, addr)
        connection.factory = self
        return connection

    def twisted_channel(self, addr):
        """A twisted.web channel of this site, for a connection handed over."""
        return super().buildProtocol(addr)
