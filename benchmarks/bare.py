"""The ceiling: a bare ``twisted.web`` server that reads the body and answers ``ok``.

Same Python, same Twisted, same reactor as ``twistd`` picks on Linux (epoll),
one process: whatever the gateway does beyond this is the gateway's own
cost. No access log (the daemon writes one line per gate call: that is part
of what the ratio gateway/bare measures), and, like the daemon's
``GateRequest``, no parsing of POST bodies into ``request.args``
(``parsePOSTFormSubmission=False``): the cheapest twisted.web can be.

    python benchmarks/bare.py --port 8081
"""

from __future__ import annotations

import argparse

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import endpoints, reactor  # noqa: E402
from twisted.web import resource, server  # noqa: E402


class Request(server.Request):
    """twisted.web's request without the form parsing, as the daemon's ``GateRequest``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(*args, **kwargs)


class Ok(resource.Resource):
    """Every path: POST reads the whole body, GET is a readiness probe."""

    isLeaf = True

    def render_POST(self, request):
        request.content.read()
        return b"ok"

    def render_GET(self, request):
        return b"ok"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument(
        "--parse-forms",
        action="store_true",
        help="twisted.web's default request (parses POST forms into request.args)",
    )
    options = parser.parse_args()
    site = server.Site(Ok(), requestFactory=server.Request if options.parse_forms else Request)
    site.log = lambda request: None  # no access log: the ceiling
    endpoint = endpoints.TCP4ServerEndpoint(reactor, options.port, interface=options.interface)
    endpoint.listen(site)
    reactor.run()


if __name__ == "__main__":
    main()
