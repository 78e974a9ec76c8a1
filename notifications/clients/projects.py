"""The projects of a Phabricator story (docs/reference.rst §3.4), named through a cached
projects map.

A story's object is looked up through Conduit (one entry of :data:`LOOKUPS`
per object type) for its project PHIDs; the instance's *projects map*
(``project.query``: PHID → name) names them. The map of each door is cached
in ``<storage>/phabricator/<door>.json``, read at start, written atomically
after each refresh, so that it survives restarts. A PHID missing from the map
refreshes it once; a PHID still missing then is named "" (and remembered, so
that it does not refresh the map again until the next restart).

Nothing here ever fails a story: any failure is logged and gives no projects.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..config import Config
from ..credentials import Service
from ..files import replace_file
from ..gates.phabricator import NOT_CACHED, PhabricatorGate
from ..renderers import dig
from ..renderers.phabricator import object_type
from .conduit import ConduitClient, Conduits, first_result
from .http import MalformedAnswer, RemoteServiceError

#: Under the storage directory: one projects map cache file per Phabricator door.
CACHE_DIRECTORY = "phabricator"

#: ``project.query`` returns at most this many projects (reference §3.4).
PROJECTS_LIMIT = 1000


def cache_path(storage_directory: Path, door: str) -> Path:
    """The cache file of a door's projects map."""
    return storage_directory / CACHE_DIRECTORY / f"{quote(door, safe='')}.json"


def projects_map_status(config: Config, service: Service) -> str:
    """The status of a service in ``/config`` and ``config show``: "" when all is well."""
    if (
        service.gate == PhabricatorGate.name
        and not cache_path(config.storage_directory, service.door).is_file()
    ):
        return NOT_CACHED
    return ""


def read_cache(path: Path, instance: str) -> dict[str, str] | None:
    """The cached map, or None when there is none for this instance (blocking)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    if not isinstance(data, dict) or data.get("instance") != instance:
        return None
    projects = data.get("projects")
    if not isinstance(projects, dict):
        return None
    return {
        phid: name
        for phid, name in projects.items()
        if isinstance(phid, str) and isinstance(name, str)
    }


def write_cache(path: Path, instance: str, names: dict[str, str], refreshed: float) -> None:
    """Write the map atomically: a reader sees the old file or the new one (blocking)."""
    content = {"instance": instance, "refreshed": int(refreshed), "projects": names}
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(content, ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8")
    replace_file(path, data)


def names_of_answer(result: Any) -> dict[str, str]:
    """PHID → name from a ``project.query`` result (``data`` keyed by PHID)."""
    data = result.get("data") if isinstance(result, dict) else None
    if isinstance(data, list) and not data:
        return {}  # PHP's empty array
    if not isinstance(data, dict):
        raise MalformedAnswer("project.query: no data in the answer")
    names = {}
    for key, project in data.items():
        if isinstance(project, dict) and isinstance(project.get("name"), str):
            phid = project.get("phid") if isinstance(project.get("phid"), str) else key
            names[phid] = project["name"]
    return names


def phids_at(value: Any, *path: str) -> list[str]:
    """The PHIDs listed at ``path`` (a list, or PHP's array keyed by index)."""
    found = dig(value, *path, default=None)
    if isinstance(found, dict):
        found = list(found.values())
    if not isinstance(found, list):
        return []
    return [phid for phid in found if isinstance(phid, str)]


# How each object type finds its project PHIDs ---------------------------------


async def task_projects(conduit: ConduitClient, phid: str) -> list[str]:
    task = first_result(await conduit.call("maniphest.query", {"phids": [phid]}))
    return phids_at(task, "projectPHIDs")


def through_repository(method: str) -> Callable[[ConduitClient, str], Awaitable[list[str]]]:
    """The projects of the repository of an object (a revision, a commit)."""

    async def lookup(conduit: ConduitClient, phid: str) -> list[str]:
        item = first_result(await conduit.call(method, {"phids": [phid]}))
        repository = dig(item, "repositoryPHID", default=None)
        if not isinstance(repository, str):
            return []
        found = first_result(await conduit.call("repository.query", {"phids": [repository]}))
        return phids_at(found, "projectPHIDs")

    return lookup


async def paste_projects(conduit: ConduitClient, phid: str) -> list[str]:
    params = {"constraints": {"phids": [phid]}, "attachments": {"projects": 1}}
    paste = first_result(await conduit.call("paste.search", params))
    return phids_at(paste, "attachments", "projects", "projectPHIDs")


#: Object type → how to find its project PHIDs. Other types have no projects.
LOOKUPS: dict[str, Callable[[ConduitClient, str], Awaitable[list[str]]]] = {
    "TASK": task_projects,
    "DREV": through_repository("differential.query"),
    "CMIT": through_repository("diffusion.querycommits"),
    "PSTE": paste_projects,
}


class _Shared:
    """One run of an operation at a time, whatever the number of waiters.

    Each waiter gets a Deferred of its own, which it may cancel (a story's
    deadline) without cancelling the operation the others wait for.
    """

    def __init__(self, operation: Callable[[], defer.Deferred]):
        self.operation = operation
        self._waiters: list[defer.Deferred] | None = None

    def __call__(self) -> defer.Deferred:
        waiter: defer.Deferred = defer.Deferred()
        if self._waiters is not None:
            self._waiters.append(waiter)
            return waiter
        self._waiters = [waiter]
        self.operation().addBoth(self._done)
        return waiter

    def _done(self, result: Any) -> None:
        waiters, self._waiters = self._waiters or [], None
        for waiter in waiters:  # a cancelled waiter ignores this
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)


class ProjectsMap:
    """PHID → name of one instance's projects, cached in a file."""

    log = Logger()

    def __init__(self, conduit: ConduitClient, path: Path, reactor):
        self.conduit = conduit
        self.path = path
        self.reactor = reactor
        self.names: dict[str, str] = {}
        #: PHIDs still unknown after a refresh: named "" without refreshing again.
        self.missing: set[str] = set()
        self.cached = False
        self._is_loaded = False
        self._load = _Shared(self._read)
        #: Concurrent lookups of unknown PHIDs share one refresh.
        self.refresh = _Shared(self._refresh)

    def _in_thread(self, function, *arguments) -> defer.Deferred:
        # Small files, but the reactor must never wait on a disk.
        return threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), function, *arguments
        )

    def loaded(self) -> defer.Deferred:
        """Fires once the cache file was read (at once after the first time); never fails."""
        if self._is_loaded:
            return defer.succeed(None)
        return self._load()

    def _read(self) -> defer.Deferred:
        d = self._in_thread(read_cache, self.path, self.conduit.instance)

        def read(names: dict[str, str] | None) -> None:
            if names is not None and not self._is_loaded:
                self.names = names
                self.cached = True
            self._is_loaded = True

        def unreadable(failure: Failure) -> None:
            self._is_loaded = True
            self.log.warn(
                "Projects map cache {path} unreadable, ignored: {error}",
                path=str(self.path),
                error=failure.getErrorMessage(),
            )

        return d.addCallbacks(read, unreadable)

    def _refresh(self) -> defer.Deferred:
        d = self.conduit.call("project.query", {"limit": PROJECTS_LIMIT})
        d.addCallback(names_of_answer)

        def store(names: dict[str, str]) -> defer.Deferred:
            self.names = names
            self._is_loaded = True
            self.missing.clear()
            saved = self._in_thread(
                write_cache, self.path, self.conduit.instance, names, self.reactor.seconds()
            )

            def written(_: Any) -> dict[str, str]:
                self.cached = True
                return names

            def unwritable(failure: Failure) -> dict[str, str]:
                self.log.warn(
                    "Could not write the projects map cache {path}: {error}",
                    path=str(self.path),
                    error=failure.getErrorMessage(),
                )
                return names

            return saved.addCallbacks(written, unwritable)

        def failed(failure: Failure) -> Failure:
            self.log.warn(
                "Could not refresh the projects map of {instance}: {error}",
                instance=self.conduit.instance,
                error=failure.getErrorMessage(),
            )
            return failure

        return d.addCallbacks(store, failed)

    async def names_of(self, phids: list[str]) -> list[str]:
        """The name of each PHID, "" for one the instance does not know."""
        await self.loaded()
        unknown = [phid for phid in phids if phid not in self.names and phid not in self.missing]
        if unknown:
            try:
                await self.refresh()
            except RemoteServiceError:
                pass  # logged by the refresh; try again at the next unknown PHID
            else:
                self.missing.update(phid for phid in unknown if phid not in self.names)
        return [self.names.get(phid, "") for phid in phids]


class ProjectsLookup:
    """What the Phabricator gate asks: the project names of a story's object."""

    log = Logger()

    def __init__(self, conduits: Conduits, storage_directory: Path, reactor, timeout: float):
        self.conduits = conduits
        self.storage_directory = storage_directory
        self.reactor = reactor
        self.timeout = timeout
        self._maps: dict[str, ProjectsMap] = {}

    def map(self, service: Service) -> ProjectsMap:
        """The projects map of a Phabricator door."""
        if service.door not in self._maps:
            self._maps[service.door] = ProjectsMap(
                self.conduits.client(service),
                cache_path(self.storage_directory, service.door),
                self.reactor,
            )
        return self._maps[service.door]

    def load(self, services: tuple[Service, ...]) -> defer.Deferred:
        """Read the cached maps of every Phabricator service (at start); never fails."""
        return defer.gatherResults(
            [self.map(service).loaded() for service in services if service.gate == "Phabricator"]
        )

    def refresh(self, service: Service) -> defer.Deferred:
        """Fetch and cache the map now; fires with PHID → name, or fails."""
        return self.map(service).refresh()

    def of_story(self, service: Service, story: Any) -> defer.Deferred:
        """The project names of the story's object; fires within the timeout and never fails."""
        phid = dig(story, "data", "objectPHID", default=None)
        lookup = LOOKUPS.get(object_type(story))
        if lookup is None or not isinstance(phid, str):
            return defer.succeed([])
        projects_map = self.map(service)

        async def projects() -> list[str]:
            phids = await lookup(projects_map.conduit, phid)
            return await projects_map.names_of(phids) if phids else []

        d = defer.Deferred.fromCoroutine(projects())
        # One deadline for the whole story (up to three calls): the notification waits on it.
        d.addTimeout(self.timeout, self.reactor)
        return d.addErrback(lambda failure: self._give_up(failure, service, phid, "projects", []))

    def _give_up(self, failure: Failure, service: Service, phid: str, what: str, default):
        """Log why Conduit could not tell ``what`` of an object; answer ``default``."""
        if failure.check(defer.TimeoutError):
            reason = f"no answer within {self.timeout:g} s"
        elif failure.check(RemoteServiceError):
            reason = failure.getErrorMessage()
        else:
            self.log.failure(
                "Looking up the {what} of {phid} failed unexpectedly", failure, what=what, phid=phid
            )
            return default
        self.log.warn(
            "{door}: no {what} for {phid}: {reason}",
            door=service.door,
            what=what,
            phid=phid,
            reason=reason,
        )
        return default

    def handle_of(self, service: Service, phid: str) -> defer.Deferred:
        """What Conduit's ``phid.query`` says of an object (a Herald webhook's):
        its ``fullName``, ``name``, ``typeName`` and ``uri``, those that are strings.

        Fires within the timeout with that dict, or None when the instance does
        not answer, refuses, or does not show the object; never fails.
        """

        async def handle() -> dict[str, str] | None:
            conduit = self.conduits.client(service)
            result = await conduit.call("phid.query", {"phids": [phid]})
            found = result.get(phid) if isinstance(result, dict) else None
            if found is None:
                found = first_result(result)
            if not isinstance(found, dict):
                return None
            fields = ("fullName", "name", "typeName", "uri")
            return {key: found[key] for key in fields if isinstance(found.get(key), str)}

        d = defer.Deferred.fromCoroutine(handle())
        d.addTimeout(self.timeout, self.reactor)
        return d.addErrback(lambda failure: self._give_up(failure, service, phid, "name", None))
