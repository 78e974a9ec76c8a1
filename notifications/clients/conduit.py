"""Phabricator's Conduit API (docs/reference.rst §3.7), and the side action of a GitHub
push on it (§3.6).

``POST <instance>/api/<method>``, the arguments form-encoded PHP-style
(``constraints[phids][0]=…``) plus ``api.token``; the answer is JSON with
``result``, ``error_code`` and ``error_info``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from ..credentials import Service
from ..report import NOTIFY_NEW_COMMITS, side_action
from .http import HTTP, MalformedAnswer, RemoteServiceError, origin, redact, unexpected


class PhabricatorAPIException(RemoteServiceError):
    """Conduit answered with an ``error_code``; the message is its ``error_info``."""

    def __init__(self, code: str, info: str):
        super().__init__(info or code)
        self.code = code
        self.info = info


def php_form(params: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Form fields of nested parameters, as PHP reads them.

    ``{"constraints": {"phids": ["P"]}, "attachments": {"projects": True}}`` gives
    ``constraints[phids][0]=P`` and ``attachments[projects]=1``.
    """
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, Mapping):
            yield from php_form(value, name)
        elif isinstance(value, list | tuple):
            yield from php_form(dict(enumerate(value)), name)
        elif isinstance(value, bool):
            yield name, "1" if value else "0"
        elif value is None:
            yield name, ""
        else:
            yield name, str(value)


def first_result(result: Any) -> Any:
    """The "first result" rule: the first value of ``result["data"]`` when there is
    one, else the first value of ``result`` (a list, or an object keyed by PHID).

    None when there is none: the bot may not see a private object.
    """
    if isinstance(result, dict) and "data" in result:
        result = result["data"]
    if isinstance(result, dict):
        return next(iter(result.values()), None)
    if isinstance(result, list):
        return result[0] if result else None
    return None


class ConduitClient:
    """Calls the Conduit API of one Phabricator instance with its API token."""

    def __init__(self, http: HTTP, instance: str, token: str, timeout: float):
        self.http = http
        self.instance = instance.rstrip("/")
        self.token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"ConduitClient({self.instance!r})"

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> defer.Deferred:
        """Call ``method``; fires with its ``result``, or fails with a :class:`RemoteServiceError`
        (:class:`PhabricatorAPIException` for an API error)."""
        what = f"Conduit {method} at {origin(self.instance)}"
        fields = [*php_form(params or {}), ("api.token", self.token)]
        d = self.http.request(
            what,
            "POST",
            f"{self.instance}/api/{method}",
            self.timeout,
            data=fields,
            headers={"Accept": ["application/json"]},
        )
        return d.addCallback(self._result, what)

    def _result(self, answer, what: str) -> Any:
        value = answer.check_status().json()
        if not isinstance(value, dict) or not ({"result", "error_code"} & set(value)):
            raise MalformedAnswer(f"{what}: not a Conduit answer")
        code = value.get("error_code")
        if code is not None:
            info = value.get("error_info")
            # Phabricator quotes a malformed token back in its error: never repeat it.
            raise PhabricatorAPIException(
                redact(str(code), self.token),
                redact(info if isinstance(info, str) else "", self.token),
            )
        return value.get("result")


class Conduits:
    """One :class:`ConduitClient` per declared Phabricator service, made when first needed."""

    log = Logger()

    def __init__(self, http: HTTP, timeout: float):
        self.http = http
        self.timeout = timeout
        self._clients: dict[tuple[str, str], ConduitClient] = {}

    def forget_clients(self) -> None:
        """Drop the clients made so far (a reload changed tokens, instances or the timeout)."""
        self._clients.clear()

    def client(self, service: Service) -> ConduitClient:
        key = (service.instance or "", service.door)
        if key not in self._clients:
            self._clients[key] = ConduitClient(
                self.http, service.instance or "", service.secret or "", self.timeout
            )
        return self._clients[key]

    def notify_new_commits(self, service: Service, clone_url: str) -> defer.Deferred:
        """Ask Phabricator to fetch the repository cloned from ``clone_url`` at once.

        Fires with the ``NotifyNewCommitsAction`` entry, or None when Phabricator
        has no such repository (nothing to do, nothing to report); never fails.
        Both calls together take at most the timeout: the gate's answer waits.
        """
        d = defer.Deferred.fromCoroutine(self._notify_new_commits(service, clone_url))
        # Cancelling at the deadline makes the pending call fail with ServiceTimeout.
        d.addTimeout(self.timeout, self.http.reactor)
        return d.addErrback(unexpected, self.log, NOTIFY_NEW_COMMITS, callSign=None)

    async def _notify_new_commits(self, service: Service, clone_url: str) -> dict | None:
        conduit = self.client(service)
        try:
            result = await conduit.call("repository.query", {"remoteURIs": [clone_url]})
        except RemoteServiceError as error:
            return side_action(NOTIFY_NEW_COMMITS, error, callSign=None)
        repository = first_result(result)
        callsign = repository.get("callsign") if isinstance(repository, dict) else None
        if not isinstance(callsign, str) or not callsign:
            self.log.debug(
                "{door}: no Phabricator repository with a callsign for {url}",
                door=service.door,
                url=clone_url,
            )
            return None
        try:
            await conduit.call("diffusion.looksoon", {"callsigns": [callsign]})
        except RemoteServiceError as error:
            return side_action(NOTIFY_NEW_COMMITS, error, callSign=callsign)
        return side_action(NOTIFY_NEW_COMMITS, callSign=callsign)
