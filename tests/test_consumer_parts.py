"""The small parts of the consumers over HTTP: addresses, signatures, headers, delays,
the event format, tokens; and the webhooks' HTTP client against a real TLS server."""

from __future__ import annotations

import hashlib
import hmac

import pytest
import pytest_twisted
from twisted.internet import reactor, ssl
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource, server
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.test.requesthelper import DummyRequest

from notifications.addresses import is_public, url_problem
from notifications.clients.http import AddressRefused, ServiceUnreachable
from notifications.clients.webhooks import webhook_client
from notifications.config import ConsumerConfig, SubscriptionConfig
from notifications.events import bearer_token, event, find_consumer
from notifications.subscriptions import Subscriber, SubscriptionFigures, sign, webhook_headers
from tests.helpers import self_signed

PUBLIC = ["8.8.8.8", "2606:4700::1111", "93.184.216.34"]
NOT_PUBLIC = [
    "127.0.0.1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # a cloud's metadata service
    "100.64.0.1",
    "0.0.0.0",  # noqa: S104 - an address judged here, never bound
    "224.0.0.1",
    "::1",
    "fe80::1",
    "fc00::1",
    "::ffff:127.0.0.1",
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
]


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses(address):
    assert is_public(address)


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_addresses_that_are_not_public(address):
    assert not is_public(address)


@pytest.mark.parametrize(
    ("url", "allow_private", "problem"),
    [
        ("https://relay.example.org/hook", False, None),
        ("https://8.8.8.8/hook", False, None),
        ("http://relay.example.org/hook", True, None),
        ("http://127.0.0.1:8000/hook", True, None),
        ("http://relay.example.org/hook", False, "plain http is allowed only with"),
        ("https://127.0.0.1/hook", False, "127.0.0.1 is not a public address"),
        ("https://[::1]:8443/", False, "::1 is not a public address"),
        ("ftp://relay.example.org/", False, "must start with https://"),
        ("https:///no-host", False, "has no host"),
        ("https://a:b@relay.example.org/", True, "must not hold a user name or password"),
        ("https://relay.example.org:99999/", False, "not a URL"),
    ],
)
def test_subscription_urls(url, allow_private, problem):
    found = url_problem(url, allow_private)
    assert (found is None) if problem is None else (problem in found), found


def test_the_signature_is_githubs_scheme():
    body = b'{"text": "caf\xc3\xa9"}'
    expected = hmac.new(b"key", body, hashlib.sha256).hexdigest()
    assert sign("key", body) == f"sha256={expected}"


def test_the_webhook_headers():
    headers = webhook_headers(
        "key",
        b"{}",
        "acme.ops.caf\u00e9.deploy",
        {"message-id": "d2f8c0a2", "timestamp": 1796000000},
        3,
    )
    assert headers == {
        "Content-Type": ["application/json"],
        "User-Agent": [headers["User-Agent"][0]],
        "X-Notifications-Signature-256": [sign("key", b"{}")],
        "X-Notifications-Attempt": ["3"],
        # Not ASCII: percent-encoded UTF-8.
        "X-Notifications-Routing-Key": ["acme.ops.caf%C3%A9.deploy"],
        "X-Notifications-Id": ["d2f8c0a2"],
        "X-Notifications-Timestamp": ["1796000000"],
    }
    assert headers["User-Agent"][0].startswith("notifications/")
    # Another publisher's message, without id nor timestamp: no such header.
    assert set(webhook_headers("key", b"{}", "a.b", {}, 1)) == {
        "Content-Type",
        "User-Agent",
        "X-Notifications-Signature-256",
        "X-Notifications-Attempt",
        "X-Notifications-Routing-Key",
    }


def subscriber(jitter, **settings) -> Subscriber:
    subscription = SubscriptionConfig(
        name="s", url="https://x.example/", patterns=("#",), secret="k", **settings
    )
    return Subscriber(subscription, "ex", reactor, http=None, timeout=1, jitter=jitter)


def test_the_delays_double_up_to_max_delay_with_up_to_one_initial_delay_of_jitter():
    low = subscriber(lambda a, b: a, initial_delay=0.5, max_delay=10.0)
    high = subscriber(lambda a, b: b, initial_delay=0.5, max_delay=10.0)
    assert [low.delay(count) for count in range(1, 8)] == [0.5, 1, 2, 4, 8, 10, 10]
    assert [high.delay(count) for count in range(1, 8)] == [1, 1.5, 2.5, 4.5, 8.5, 10.5, 10.5]


def test_kept_figures_read_back_only_what_is_as_written():
    figures = SubscriptionFigures.from_kept(
        {"delivered": 3, "retried": -1, "dead_lettered": True, "last_error": "HTTP 500", "x": 1}
    )
    assert (figures.delivered, figures.retried, figures.dead_lettered) == (3, 0, 0)
    assert figures.last_error == "HTTP 500"
    assert SubscriptionFigures.from_kept("nonsense") == SubscriptionFigures()


class EventFormat(SynchronousTestCase):
    def test_an_event(self):
        self.assertEqual(
            event("notification", b'{"text":"a"}', 42),
            b'id: 42\nevent: notification\ndata: {"text":"a"}\n\n',
        )

    def test_each_line_of_the_data_is_a_data_line(self):
        self.assertEqual(event("gap", b"a\nb\r\nc"), b"event: gap\ndata: a\ndata: b\ndata: c\n\n")
        self.assertEqual(event("gap", b""), b"event: gap\ndata: \n\n")


class Tokens(SynchronousTestCase):
    consumers = (
        ConsumerConfig("one", "token-one-0123456789", ("a.#",)),
        ConsumerConfig("two", "token-two-0123456789", ()),
    )

    def test_the_consumer_of_a_token(self):
        self.assertEqual(find_consumer(self.consumers, "token-two-0123456789").name, "two")
        self.assertIsNone(find_consumer(self.consumers, "token-two-012345678"))
        self.assertIsNone(find_consumer(self.consumers, ""))
        self.assertIsNone(find_consumer((), "token-one-0123456789"))

    def test_the_token_of_a_request(self):
        def request(header: bytes | None = None, query: str | None = None) -> DummyRequest:
            made = DummyRequest([b"events"])
            if header is not None:
                made.requestHeaders.setRawHeaders(b"authorization", [header])
            if query is not None:
                made.args[b"token"] = [query.encode()]
            return made

        self.assertEqual(bearer_token(request(b"Bearer abc")), "abc")
        self.assertEqual(bearer_token(request(b"bearer   abc ")), "abc")
        self.assertEqual(bearer_token(request(query="q")), "q")
        self.assertEqual(bearer_token(request(b"Bearer h", query="q")), "h")
        self.assertIsNone(bearer_token(request(b"Basic dXNlcjpwYXNz")))
        self.assertIsNone(bearer_token(request(b"Bearer")))
        self.assertIsNone(bearer_token(request()))


# TLS, verified for the URL's host name --------------------------------------------------------


class _Hook(resource.Resource):
    isLeaf = True

    def render_POST(self, request):
        return b"ok"


@pytest_twisted.ensureDeferred
async def test_tls_is_verified_for_the_urls_host_name():
    certificate, key = self_signed("localhost")
    options = ssl.PrivateCertificate.loadPEM(key + certificate).options()
    port = await SSL4ServerEndpoint(reactor, 0, options, interface="127.0.0.1").listen(
        server.Site(_Hook())
    )
    number = port.getHost().port
    trusting = BrowserLikePolicyForHTTPS(trustRoot=ssl.Certificate.loadPEM(certificate))
    clients = []
    try:
        trusted = webhook_client(reactor, True, 5, tls_policy=trusting, persistent=False)
        clients.append(trusted)
        answer = await trusted.request("hook", "POST", f"https://localhost:{number}/", 5)
        assert (answer.status, answer.body) == (200, b"ok")
        # The same server under another name: the certificate is not for it.
        with pytest.raises(ServiceUnreachable, match="TLS handshake failed"):
            await trusted.request("hook", "POST", f"https://127.0.0.1:{number}/", 5)
        # Without that CA among the trusted ones: refused too.
        default = webhook_client(reactor, True, 5, persistent=False)
        clients.append(default)
        with pytest.raises(ServiceUnreachable, match="TLS handshake failed"):
            await default.request("hook", "POST", f"https://localhost:{number}/", 5)
        # And a name resolving to loopback without allow_private: never connected.
        strict = webhook_client(reactor, False, 5, tls_policy=trusting, persistent=False)
        clients.append(strict)
        with pytest.raises(AddressRefused, match=r"localhost resolves to 127\.0\.0\.1"):
            await strict.request("hook", "POST", f"https://localhost:{number}/", 5)
    finally:
        for client in clients:
            await client.close()
        await port.stopListening()
