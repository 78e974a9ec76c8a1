"""Mailgun's stored messages, fetched for the DockerHub gate's build failures
(docs/reference.rst §3.2).

Docker Hub announces a failed build only by e-mail; Mailgun stores the mail
and calls the DockerHub gate with the message's ``storage.url``. That URL
comes from the caller, and the request to it carries the Mailgun API key, so
it is fetched only when it is a Mailgun address: ``https`` on a host allowed
by ``[mailgun] hosts`` (plain ``http`` only for a loopback host listed there
by name, for tests). The gate refuses any other URL with 400 (see
:meth:`MailgunClient.refusal`) and nothing is fetched; it makes the
notification of what :meth:`MailgunClient.fetch` brings back.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.logger import Logger

from ..report import MAILGUN, side_action
from .http import HTTP, MalformedAnswer, RemoteServiceError, origin


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_matches(host: str, pattern: str) -> bool:
    """``pattern`` is a host name, or ``*.domain`` for any name ending in ``.domain``."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def refusal(url: Any, hosts: Iterable[str]) -> str | None:
    """Why the key must not be sent to ``url``; None when it is a Mailgun address."""
    if not isinstance(url, str) or not url:
        return "no storage.url in the payload"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "storage.url is not a URL"
    host = (parts.hostname or "").lower()
    hosts = tuple(hosts)
    if parts.username is not None or parts.password is not None or not host:
        return "storage.url is not a Mailgun URL"
    if parts.scheme == "https" and any(host_matches(host, pattern) for pattern in hosts):
        return None
    if parts.scheme == "http" and is_loopback(host) and host in hosts:
        return None
    return "storage.url is not an https URL on a host of [mailgun] hosts"


class MailgunClient:
    """Fetches stored messages with the API key, only from Mailgun's hosts."""

    log = Logger()

    def __init__(self, http: HTTP, key: str, hosts: Iterable[str], timeout: float):
        self.http = http
        self.key = key
        self.hosts = tuple(hosts)
        self.timeout = timeout

    def stored_message(self, url: str) -> defer.Deferred:
        """GET a stored message (basic auth ``api:<key>``); fires with its JSON object.

        The URL must have passed :func:`refusal`.
        """
        what = f"Mailgun at {origin(url)}"
        d = self.http.request(
            what,
            "GET",
            url,
            self.timeout,
            auth=("api", self.key),
            headers={"Accept": ["application/json"]},
        )

        def message(answer) -> dict:
            value = answer.check_status().json()
            if not isinstance(value, dict) or not isinstance(value.get("body-plain"), str):
                raise MalformedAnswer(f"{what}: the stored message has no body-plain")
            return value

        return d.addCallback(message)

    def refusal(self, url: Any) -> str | None:
        """Why the key must not be sent to ``url``; None when it is a Mailgun address."""
        return refusal(url, self.hosts)

    def fetch(self, url: str, door: str) -> defer.Deferred:
        """Fetch a stored message; fires with ``(message, report entry)``.

        The message is None when the fetch failed (logged as a warning naming
        the ``door``), and the ``MailgunAction`` entry then has the error:
        a remote failure does not fail the Deferred. The URL must have passed
        :meth:`refusal`.
        """
        entry = {"method": "GET", "target": origin(url)}

        def fetched(message: dict) -> tuple[dict, dict]:
            return message, side_action(MAILGUN, **entry)

        def failed(failure) -> tuple[None, dict]:
            failure.trap(RemoteServiceError)
            self.log.warn(
                "{door}: build failure mail not fetched: {error}",
                door=door,
                error=failure.getErrorMessage(),
            )
            return None, side_action(MAILGUN, failure.value, **entry)

        return self.stored_message(url).addCallbacks(fetched, failed)
