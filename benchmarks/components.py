"""What each step of one GitHub push call costs, timed alone in one process.

The sampling profile (``run.py --profile``) says where the daemon's reactor
thread spends its time under load, GIL contention and scheduling included.
This complements it: each step of a call timed in a loop, with no socket, no
other thread and no broker, on the same 7 KB signed push. The sum is the
floor of what one call costs in this Python; the difference with the
profile's per-call time is the price of doing it all concurrently.

    python benchmarks/components.py [--repeat 5] [--number 2000]

A step whose API has changed in the package prints ``n/a`` with the reason
instead of stopping the others.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import hmac
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from payloads import github_push  # noqa: E402

PUSH_COMMITS = 12
SECRET = "bench-secret"  # noqa: S105 - a made-up secret to sign with


def scratch_folder(prefix: str) -> Path:
    """A temporary folder (configuration copy, outbox), removed when the script ends."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def timed(function, number: int, repeat: int) -> float:
    """Median over ``repeat`` loops of the time of one call, in microseconds."""
    results = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            function()
        results.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(results)


def steps(body: bytes, signature: str, number: int):
    """(name, setup) pairs; each setup returns the function to time and its count divisor."""
    payload = json.loads(body)
    headers = {
        "content-type": "application/json",
        "x-github-event": "push",
        "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "x-hub-signature-256": f"sha256={signature}",
    }

    def http_bare(parse_forms: bool):
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport
        from twisted.web import resource, server

        class Ok(resource.Resource):
            isLeaf = True

            def render_POST(self, request):
                request.content.read()
                return b"ok"

        class NoForms(server.Request):
            # As the daemon's GateRequest: no parsing of POST bodies into request.args.
            def __init__(self, *args, **kwargs):
                kwargs.setdefault("parsePOSTFormSubmission", False)
                super().__init__(*args, **kwargs)

        site = server.Site(Ok(), requestFactory=server.Request if parse_forms else NoForms)
        site.log = lambda request: None
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
        transport = StringTransport()
        channel.makeConnection(transport)
        raw = (
            b"POST /gate/GitHub/Acme HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nX-GitHub-Event: push\r\n"
            b"X-GitHub-Delivery: 72d3162e\r\nX-Hub-Signature-256: sha256="
            + signature.encode()
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )

        def run():
            channel.dataReceived(raw)
            transport.clear()

        return run

    def hmac_check():
        key = SECRET.encode()
        expected = "sha256=" + signature

        def run():
            digest = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
            hmac.compare_digest(digest.encode(), expected.encode())

        return run

    def json_parse():
        from notifications.gates.base import parse_json_object

        return lambda: parse_json_object(body)

    def json_loads_only():
        return lambda: json.loads(body)

    def orjson_loads_only():
        import orjson

        return lambda: orjson.loads(body)

    def render():
        from notifications.renderers import github as render

        return lambda: render.render("push", payload)

    def config():
        from notifications.config import load_config

        folder = scratch_folder("components-")
        shutil.copytree(ROOT / "etc", folder / "etc")
        credentials = json.loads((folder / "etc" / "credentials.json").read_text())
        credentials["services"] = [
            {**s, "secret": SECRET} if s["gate"] == "GitHub" else s
            for s in credentials["services"]
            if s["gate"] != "Phabricator"
        ]
        (folder / "etc" / "credentials.json").write_text(json.dumps(credentials))
        return load_config(folder / "etc" / "notifications.toml", environ={})

    def gate_process():
        from notifications.gates import GateCall, make_gates

        gate = make_gates(config())["GitHub"]
        call = GateCall(door="Acme", headers=headers, body=body)
        return lambda: gate.process(call)

    def notification_json():
        from notifications.gates import GateCall, make_gates

        gate = make_gates(config())["GitHub"]
        outcome = gate.process(GateCall(door="Acme", headers=headers, body=body))
        notification = outcome.publications[0].notification
        return lambda: (notification.to_json(), notification.routing_key)

    def report_json():
        from notifications.report import amqp_action, make_report

        def run():
            action = amqp_action("notifications", "acme.widgets.github.push", status="published")
            report = make_report("GitHub", "Acme", 1795855255, [action])
            json.dumps(report, ensure_ascii=False).encode()

        return run

    def logging_lines(observer: str, access_line: bool = False):
        # The call line as web.CallHandler logs it ("{line}", the fields kept
        # for the JSON log), through the daemon's text observer under
        # `twistd -n` (notifications.logs) or Twisted's own (what twistd builds otherwise).
        from twisted.logger import FileLogObserver, Logger, LogPublisher, textFileLogObserver
        from twisted.web.http import combinedLogFormatter

        from notifications.logs import classic_formatter

        sink = io.StringIO()
        if observer == "daemon":
            publisher = LogPublisher(FileLogObserver(sink, classic_formatter()))
        else:
            publisher = LogPublisher(textFileLogObserver(sink))
        log = Logger(namespace="notifications.web.CallHandler", observer=publisher)

        class FakeRequest:
            uri = b"/gate/GitHub/Acme"
            method = b"POST"
            clientproto = b"HTTP/1.1"
            code = 200
            sentLength = 233

            def getClientAddress(self):
                from twisted.internet.address import IPv4Address

                return IPv4Address("TCP", "127.0.0.1", 1234)

            def getHeader(self, name):
                return b"GitHub-Hookshot/bench" if name == b"user-agent" else None

        request = FakeRequest()
        fields = {
            "gate": "GitHub",
            "door": "Acme",
            "event": "push",
            "delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            "request_id": "3f1c0d2e9a7b4c55",
            "status": 200,
            "detail": "AMQPAction acme.widgets.github.push published",
        }

        def run():
            log.info(
                "{line}",
                line="{gate}/{door} event={event} delivery={delivery} request={request_id} "
                "→ {status} {detail}".format(**fields),
                **fields,
            )
            if access_line:
                publisher(
                    {
                        "log_format": "{log_io}",
                        "log_io": combinedLogFormatter("28/Nov/2026:09:11:39 +0000", request),
                        "log_level": None,
                        "log_namespace": "twisted.python.log",
                        "log_time": time.time(),
                        "log_system": "-",
                    }
                )
            sink.seek(0)
            sink.truncate()

        return run

    def outbox(synchronous: str, per_commit: int):
        def setup():
            from twisted.internet.task import Clock

            from notifications.gates import GateCall, make_gates
            from notifications.outbox import Outbox

            gate = make_gates(config())["GitHub"]
            outcome = gate.process(GateCall(door="Acme", headers=headers, body=body))
            message = outcome.publications[0].notification.to_json()
            folder = scratch_folder("components-outbox-")
            box = Outbox(folder, Clock(), synchronous=synchronous, threaded=False)
            box.open()
            box.max_messages = 10**9
            counter = iter(range(10**9))

            def run():
                # One transaction (one fsync) for per_commit calls, as group
                # commit does under load: insert + delivery id, then delete.
                # The batcher is held busy while they queue, so that they go
                # as one group (without a thread it runs each at once).
                ids = []
                box._batcher._running = True
                for _ in range(per_commit):
                    n = next(counter)
                    box.add(
                        [(f"m-{n}", "acme.widgets.github.push", message)], delivery=f"d-{n}"
                    ).addCallback(lambda entries: ids.extend(e.id for e in entries))
                box._batcher._next()
                box.remove(ids)

            return run

        return setup

    def amqp_publish():
        # What Publisher.publish sends for a message, framed at frame_max 4096
        # (txamqp's default before connection.tune, as this line always measured).
        from twisted.internet.testing import StringTransport

        from notifications.amqp.connection import PublishEncoder
        from notifications.publisher import message_properties

        encoder = PublishEncoder(1, "notifications", 4096, message_properties("", 0))
        transport = StringTransport()
        message = json.dumps({"rawContent": payload, "text": "x" * 60}).encode()
        routing_key, message_id = "acme.widgets.github.push", "72d3162e"

        def run():
            frames = encoder.encode(routing_key.encode(), message, message_id.encode(), 1795855255)
            transport.write(frames)
            transport.clear()

        return run

    def whole_call(per_commit: int):
        # The daemon's own WebApp and Site, the real gate, outbox and
        # dispatcher, on a Clock, with no socket and no thread: the outbox
        # (here only the GitHub delivery ids: each call is checked, published,
        # confirmed, then its id remembered) runs on the calling thread
        # (without fsync) and a stand-in publisher confirms what it was given
        # once the requests are in. per_commit requests go as one group of
        # delivery checks, as under load. The call line goes to a text log
        # observer in memory.
        from twisted.internet import defer
        from twisted.internet.address import IPv4Address
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport
        from twisted.logger import globalLogPublisher, textFileLogObserver

        from notifications.daemon import freeze_startup_objects
        from notifications.dispatcher import Dispatcher
        from notifications.gates import make_gates
        from notifications.outbox import Outbox
        from notifications.web import WebApp

        class Publisher:
            exchange = "notifications"
            connected = True

            def __init__(self):
                self.connected_listeners = []
                self.waiting = []

            def startService(self):
                pass

            def publish(self, routing_key, body, message_id, timestamp=None):
                d = defer.Deferred()
                self.waiting.append(d)
                return d

        settings = config()
        clock = Clock()
        clock.advance(1_800_000_000)
        folder = scratch_folder("components-call-")
        outbox = Outbox(folder, clock, synchronous="normal", threaded=False)
        outbox.open()
        # No fsync at all, not even at checkpoints: their time on this disk
        # varies by milliseconds, and this step is about the CPU of a call.
        outbox._batcher.connection.execute("PRAGMA synchronous=OFF")
        outbox.max_messages = 10**9
        publisher = Publisher()
        dispatcher = Dispatcher(outbox, publisher, clock)
        dispatcher.running = True
        app = WebApp(settings, dispatcher, make_gates(settings), clock)
        site = app.site("all")
        sink = io.StringIO()
        globalLogPublisher.addObserver(textFileLogObserver(sink))
        channels = []
        for port in range(per_commit):
            channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000 + port))
            # Its timeouts on the Clock: the global reactor, not running here,
            # would pile up their cancelled delayed calls.
            channel.callLater = clock.callLater
            channel.makeConnection(StringTransport())
            channels.append(channel)
        counter = iter(range(10**9))

        def request() -> bytes:
            head = (
                b"POST /gate/GitHub/Acme HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nX-GitHub-Event: push\r\n"
                b"X-GitHub-Delivery: d-%d\r\nX-Hub-Signature-256: sha256=%s\r\n"
                b"Content-Length: %d\r\n\r\n"
            ) % (next(counter), signature.encode(), len(body))
            return head + body

        def run():
            batcher = outbox._batcher
            batcher._running = True  # the requests' checks queue up: one group
            for channel in channels:
                channel.dataReceived(request())
            batcher._next()
            waiting, publisher.waiting = publisher.waiting, []
            for d in waiting:
                d.callback(None)
            for channel in channels:
                if b"200 OK" not in channel.transport.value():
                    raise RuntimeError(channel.transport.value()[:300].decode())
                channel.transport.clear()
            sink.seek(0)
            sink.truncate()

        # As the daemon does once started.
        freeze_startup_objects()
        return run

    return [
        (
            "twisted.web: parse the request, dispatch, answer (bare, no form parsing)",
            lambda: http_bare(False),
            1,
        ),
        (
            "twisted.web: the same, default request (parses the POST's content type)",
            lambda: http_bare(True),
            1,
        ),
        ("HMAC-SHA256 of the body and compare", hmac_check, 1),
        ("JSON parsing: json.loads alone", json_loads_only, 1),
        ("JSON parsing: orjson.loads alone", orjson_loads_only, 1),
        ("JSON parsing: parse_json_object (loads + depth check)", json_parse, 1),
        ("rendering: render('push', payload)", render, 1),
        ("GitHub gate.process (HMAC + parsing + rendering + notification)", gate_process, 1),
        ("notification to JSON + routing key", notification_json, 1),
        ("actions report to JSON", report_json, 1),
        (
            "logging: the call line, the daemon's text observer (twistd -n)",
            lambda: logging_lines("daemon"),
            1,
        ),
        ("logging: the call line, Twisted's text observer", lambda: logging_lines("twisted"), 1),
        (
            "logging: the call line + an access line, Twisted's observer",
            lambda: logging_lines("twisted", access_line=True),
            1,
        ),
        ("AMQP framing: basic.publish of the message (PublishEncoder)", amqp_publish, 1),
        ("outbox: 1 call per commit, synchronous=full", outbox("full", 1), 1),
        ("outbox: 1 call per commit, synchronous=normal", outbox("normal", 1), 1),
        ("outbox: 16 calls per commit, synchronous=full (per call)", outbox("full", 16), 16),
        ("outbox: 16 calls per commit, synchronous=normal (per call)", outbox("normal", 16), 16),
        (
            "a whole call in one process: HTTP in, gate, delivery id, publish, confirm, answer",
            lambda: whole_call(1),
            1,
        ),
        ("the same, 16 calls per group of delivery checks (per call)", lambda: whole_call(16), 16),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000, help="calls per timing loop")
    parser.add_argument("--repeat", type=int, default=5, help="loops; the median is kept")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    options = parser.parse_args()
    body = json.dumps(github_push(PUSH_COMMITS)).encode()
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    print(f"One GitHub push call, {len(body)} bytes; µs per call, median of {options.repeat}")
    results = {}
    for name, setup, divisor in steps(body, signature, options.number):
        try:
            function = setup()
            # The outbox loops fsync: fewer rounds, same median.
            number = options.number if "outbox" not in name else max(20, options.number // 20)
            number = max(1, number // divisor)
            micros = timed(function, number, options.repeat) / divisor
        except Exception as error:  # a step the package's API no longer fits
            print(f"  {'n/a':>8}  {name} ({type(error).__name__}: {error})")
            continue
        results[name] = round(micros, 1)
        print(f"  {micros:8.1f}  {name}")
    if options.json:
        options.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
