"""The Conduit client over real loopback HTTP: encoding, the first-result rule, errors.

Also what every outgoing call shares (:class:`notifications.clients.http.HTTP`):
timeouts, refused connections, and TLS verification with service_identity.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor, ssl
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.web.client import BrowserLikePolicyForHTTPS

from notifications.clients import http as http_module
from notifications.clients.conduit import (
    ConduitClient,
    PhabricatorAPIException,
    first_result,
    php_form,
)
from notifications.clients.http import (
    HTTP,
    MalformedAnswer,
    ServiceHTTPError,
    ServiceTimeout,
    ServiceUnreachable,
)
from tests.fakes import FakeConduit
from tests.helpers import closed_port, self_signed

TOKEN = "api-conduitsecrettoken0000000000"
TASK = "PHID-TASK-acme0000widgets"


@pytest_twisted.async_yield_fixture
async def http():
    client = HTTP(reactor)
    yield client
    await client.close()


@pytest_twisted.async_yield_fixture
async def conduit():
    fake = await FakeConduit(TOKEN, delay=3.0).start()
    yield fake
    await fake.stop()


def client(http: HTTP, url: str, timeout: float = 2.0, token: str = TOKEN) -> ConduitClient:
    return ConduitClient(http, url, token, timeout)


async def failure_of(d) -> BaseException:
    try:
        await d
    except Exception as error:
        return error
    raise AssertionError("the call succeeded")


# Encoding ------------------------------------------------------------------------


def test_php_form_nests_with_brackets():
    params = {
        "constraints": {"phids": ["PHID-PSTE-1", "PHID-PSTE-2"]},
        "attachments": {"projects": 1, "subscribers": True, "hidden": False},
        "remoteURIs": ("https://github.com/Acme/widgets.git",),
        "limit": 1000,
        "order": None,
    }
    assert list(php_form(params)) == [
        ("constraints[phids][0]", "PHID-PSTE-1"),
        ("constraints[phids][1]", "PHID-PSTE-2"),
        ("attachments[projects]", "1"),
        ("attachments[subscribers]", "1"),
        ("attachments[hidden]", "0"),
        ("remoteURIs[0]", "https://github.com/Acme/widgets.git"),
        ("limit", "1000"),
        ("order", ""),
    ]


@pytest_twisted.ensureDeferred
async def test_call_posts_the_form_and_the_token(http, conduit):
    conduit.tasks[TASK] = ["PHID-PROJ-servers"]
    params = {"phids": [TASK], "constraints": {"statuses": ["open"]}}
    result = await client(http, conduit.url + "/").call("maniphest.query", params)
    assert result == {TASK: {"phid": TASK, "projectPHIDs": ["PHID-PROJ-servers"]}}
    [request] = conduit.requests
    assert (request.method, request.path) == ("POST", "/api/maniphest.query")
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.form == {
        "phids[0]": TASK,
        "constraints[statuses][0]": "open",
        "api.token": TOKEN,
    }


# The first-result rule -------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "first"),
    [
        pytest.param({"data": [{"id": 1}, {"id": 2}], "cursor": {}}, {"id": 1}, id="data-list"),
        pytest.param({"data": {"PHID-A": {"id": 1}}}, {"id": 1}, id="data-by-phid"),
        pytest.param({"PHID-A": {"id": 1}, "PHID-B": {"id": 2}}, {"id": 1}, id="by-phid"),
        pytest.param([{"id": 3}], {"id": 3}, id="list"),
        pytest.param([], None, id="empty-list"),
        pytest.param({"data": []}, None, id="empty-data"),
        pytest.param({}, None, id="empty-object"),
        pytest.param(None, None, id="null"),
    ],
)
def test_first_result(result, first):
    assert first_result(result) == first


@pytest_twisted.ensureDeferred
async def test_private_object_is_an_empty_result_not_an_error(http, conduit):
    result = await client(http, conduit.url).call("maniphest.query", {"phids": [TASK]})
    assert result == []
    assert first_result(result) is None


# Errors ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_api_error_is_a_phabricator_api_exception_without_the_token(http, conduit):
    conduit.mode = "api-error"
    error = await failure_of(client(http, conduit.url).call("maniphest.query", {}))
    assert isinstance(error, PhabricatorAPIException)
    assert error.code == "ERR-INVALID-AUTH"
    # Phabricator quotes the token it got back: the message must not.
    assert str(error) == 'API token "…" has the wrong format.'


@pytest_twisted.ensureDeferred
async def test_unknown_method_is_an_api_error(http, conduit):
    error = await failure_of(client(http, conduit.url).call("nothing.here"))
    assert isinstance(error, PhabricatorAPIException)
    assert str(error) == 'Conduit method "nothing.here" does not exist.'


@pytest.mark.parametrize(
    ("mode", "kind", "message"),
    [
        pytest.param("http-500", ServiceHTTPError, "HTTP 500", id="http-500"),
        pytest.param("malformed", MalformedAnswer, "the answer is not JSON", id="malformed"),
        pytest.param("slow", ServiceTimeout, "no answer within 0.3 s", id="timeout"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_http_failures(http, conduit, mode, kind, message):
    conduit.mode = mode
    started = reactor.seconds()
    error = await failure_of(client(http, conduit.url, timeout=0.3).call("maniphest.query"))
    assert reactor.seconds() - started < 2
    assert type(error) is kind
    assert str(error) == f"Conduit maniphest.query at {conduit.url}: {message}"
    assert TOKEN not in str(error)


@pytest_twisted.ensureDeferred
async def test_an_answer_that_is_not_a_conduit_answer(http, conduit):
    conduit.call_maniphest_query = None  # not reached: the shape is checked first
    conduit.answer = lambda recorded, mode: (200, b'["not", "conduit"]')
    error = await failure_of(client(http, conduit.url).call("maniphest.query"))
    assert type(error) is MalformedAnswer
    assert str(error).endswith(": not a Conduit answer")


@pytest_twisted.ensureDeferred
async def test_an_answer_too_large_is_not_read(http, conduit, monkeypatch):
    monkeypatch.setattr(http_module, "MAX_BODY", 200)
    conduit.projects.update({f"PHID-PROJ-{index:020d}": f"Project {index}" for index in range(9)})
    error = await failure_of(client(http, conduit.url).call("project.query", {"limit": 1000}))
    assert type(error) is MalformedAnswer
    assert str(error).endswith(": the answer is larger than 200 bytes")
    conduit.projects.clear()
    assert (await client(http, conduit.url).call("project.query"))["data"] == []


@pytest_twisted.ensureDeferred
async def test_refused_connection(http):
    url = f"http://127.0.0.1:{closed_port()}"
    error = await failure_of(client(http, url).call("maniphest.query"))
    assert type(error) is ServiceUnreachable
    assert str(error) == f"Conduit maniphest.query at {url}: connection refused"


@pytest_twisted.ensureDeferred
async def test_slow_answer_frees_the_connection_for_the_next_call(http, conduit):
    conduit.modes["maniphest.query"] = "slow"
    conduit.tasks[TASK] = []
    slow = client(http, conduit.url, timeout=0.3)
    assert isinstance(await failure_of(slow.call("maniphest.query")), ServiceTimeout)
    conduit.modes.clear()
    assert await slow.call("maniphest.query", {"phids": [TASK]}) == {
        TASK: {"phid": TASK, "projectPHIDs": []}
    }


# TLS ---------------------------------------------------------------------------------


#: Twisted's server-side TLS options still hand pyOpenSSL objects to pyOpenSSL.
TLS_WARNINGS = pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")


@pytest_twisted.async_yield_fixture
async def tls_conduit(conduit):
    """The fake Conduit behind TLS too, with a certificate for ``localhost``."""
    certificate, key = self_signed("localhost")
    server = ssl.PrivateCertificate.loadPEM(certificate + key)
    port = await SSL4ServerEndpoint(reactor, 0, server.options(), interface="127.0.0.1").listen(
        conduit._site
    )
    yield f"https://localhost:{port.getHost().port}", ssl.Certificate.loadPEM(certificate)
    await port.stopListening()


@TLS_WARNINGS
@pytest_twisted.ensureDeferred
async def test_tls_certificate_not_trusted_is_refused(http, tls_conduit):
    url, _ = tls_conduit
    error = await failure_of(client(http, url).call("maniphest.query"))
    assert type(error) is ServiceUnreachable
    assert str(error) == (
        f"Conduit maniphest.query at {url}: "
        "TLS handshake failed (certificate not trusted or not for this host?)"
    )


@TLS_WARNINGS
@pytest_twisted.ensureDeferred
async def test_tls_trusted_certificate_for_the_host_is_accepted(tls_conduit, conduit):
    url, certificate = tls_conduit
    trusting = HTTP(reactor, tls_policy=BrowserLikePolicyForHTTPS(trustRoot=certificate))
    try:
        assert await client(trusting, url).call("maniphest.query", {"phids": [TASK]}) == []
        # Trusted, but not a certificate for this name: service_identity refuses it.
        other = url.replace("localhost", "127.0.0.1")
        error = await failure_of(client(trusting, other).call("maniphest.query"))
        assert type(error) is ServiceUnreachable
        assert "TLS handshake failed" in str(error)
        assert len(conduit.requests) == 1  # only the trusted call got through
    finally:
        await trusting.close()
