"""The ceiling: a bare ``twisted.web`` server that reads the body and answers ``ok``.

Same Python, same Twisted, same reactor as ``twistd`` picks on Linux (epoll),
one process: whatever the gateway does beyond this is the gateway's own
cost. No access log (the daemon writes one line per gate call: that is part
of what the ratio gateway/bare measures), and, like the daemon's
``GateRequest``, no parsing of POST bodies into ``request.args``
(``parsePOSTFormSubmission=False``): the cheapest twisted.web can be.

The resource, the options and the listening are ``twisted_default.py``'s
(imported once the reactor is installed): only the ``Site`` differs.

    python benchmarks/bare.py --port 8081
"""

from __future__ import annotations

from twisted.internet import epollreactor

epollreactor.install()

from twisted.web import server  # noqa: E402
from twisted_default import Receiver, arguments, serve  # noqa: E402


class Request(server.Request):
    """twisted.web's request without the form parsing, as the daemon's ``GateRequest``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(*args, **kwargs)


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument(
        "--parse-forms",
        action="store_true",
        help="twisted.web's default request (parses POST forms into request.args)",
    )
    options = parser.parse_args()
    site = server.Site(
        Receiver(), requestFactory=server.Request if options.parse_forms else Request
    )
    site.log = lambda request: None  # no access log: the ceiling
    serve(site, options)


if __name__ == "__main__":
    main()
