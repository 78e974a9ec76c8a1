"""Docker Hub's build trigger: the side action of a GitHub push (docs/reference.rst §3.6)."""

from __future__ import annotations

from urllib.parse import quote

from twisted.internet import defer
from twisted.logger import Logger

from ..report import TRIGGER_BUILD, side_action
from .http import HTTP, RemoteServiceError, origin, unexpected


class DockerHubClient:
    """Triggers automated builds: ``POST <base>/u/<owner/repo>/trigger/<token>/``."""

    log = Logger()

    def __init__(self, http: HTTP, base_url: str, timeout: float):
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def trigger_build(self, image: str, token: str) -> defer.Deferred:
        """Trigger the build of ``image``; fires with its report entry, never fails.

        The token is in the URL path: error messages name the origin only.
        """
        d = defer.Deferred.fromCoroutine(self._trigger_build(image, token))
        return d.addErrback(unexpected, self.log, TRIGGER_BUILD, image=image)

    async def _trigger_build(self, image: str, token: str) -> dict:
        url = f"{self.base_url}/u/{quote(image, safe='/')}/trigger/{quote(token, safe='')}/"
        try:
            answer = await self.http.request(
                f"Docker Hub at {origin(self.base_url)}",
                "POST",
                url,
                self.timeout,
                json={"build": True},
            )
            answer.check_status()
        except RemoteServiceError as error:
            return side_action(TRIGGER_BUILD, error, image=image)
        return side_action(TRIGGER_BUILD, image=image)
