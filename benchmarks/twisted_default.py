"""What a Twisted user starts from: twisted.web's ``Site`` with its defaults.

A resource that reads the body and answers 200, served by ``server.Site``
as it comes: the default reactor, the default request (it parses POST
forms into ``request.args``), and the access log (one combined-format line
per request, written to ``--access-log``). Beside ``bare.py``, the ceiling
with everything optional taken out, this is the reference a Twisted user
would compare the gateway with.

``bare.py`` imports the resource, the options and the listening from here:
the two references differ only in their ``Site`` (and reactor), nothing else.

    python benchmarks/twisted_default.py --port 8083 --access-log /tmp/access.log
"""

from __future__ import annotations

import argparse

from twisted.internet import endpoints, reactor
from twisted.web import resource, server


class Receiver(resource.Resource):
    """Every path: POST reads the whole body, GET is a readiness probe."""

    isLeaf = True

    def render_POST(self, request):
        request.content.read()
        return b"ok"

    def render_GET(self, request):
        return b"ok"


def arguments(description: str) -> argparse.ArgumentParser:
    """The options of both reference servers: where to listen."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interface", default="127.0.0.1")
    return parser


def serve(site: server.Site, options: argparse.Namespace) -> None:
    """Listen on ``--interface``, ``--port`` and run the reactor until it is stopped."""
    endpoint = endpoints.TCP4ServerEndpoint(reactor, options.port, interface=options.interface)
    endpoint.listen(site)
    reactor.run()


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--access-log", required=True, help="the access log file")
    options = parser.parse_args()
    serve(server.Site(Receiver(), logPath=options.access_log), options)


if __name__ == "__main__":
    main()
