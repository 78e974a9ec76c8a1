"""The HTTP clients of the side actions: Conduit, Docker Hub, Mailgun
(docs/reference.rst §3.2, §3.4, §3.6).

Gates ask for what they need (a story's projects, a push's side actions, a
stored mail); these clients make the calls, all through the one
:class:`~.http.HTTP` client built by :func:`make_clients`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.application import service
from twisted.logger import Logger

from ..config import Config
from ..gates import gate_clients
from .conduit import Conduits
from .dockerhub import DockerHubClient
from .http import HTTP
from .mailgun import MailgunClient
from .projects import ProjectsLookup


@dataclass
class Clients:
    """Every client, sharing one HTTP client (one connection pool)."""

    config: Config
    http: HTTP
    conduits: Conduits
    projects: ProjectsLookup
    dockerhub: DockerHubClient
    mailgun: MailgunClient | None

    def reconfigure(self, config: Config) -> None:
        """Apply a reloaded configuration: the services, their projects maps, the timeout."""
        self.config = config
        self.projects.load(config.services)
        timeout = config.http_timeout
        for client in (self.conduits, self.projects, self.dockerhub, self.mailgun):
            if client is not None:
                client.timeout = timeout
        self.conduits.forget_clients()

    def gate_collaborators(self) -> dict[str, Any]:
        """The keyword arguments of :func:`notifications.gates.make_gates`: each
        client some gate takes (its ``clients`` and ``side_action_clients``)."""
        return {name: getattr(self, name) for name in gate_clients()}


def make_clients(config: Config, reactor, tls_policy=None) -> Clients:
    """Build the clients of a configuration; no call is made yet."""
    http = HTTP(reactor, tls_policy=tls_policy)
    timeout = config.http_timeout
    conduits = Conduits(http, timeout)
    mailgun = None
    if config.mailgun_key:
        mailgun = MailgunClient(http, config.mailgun_key, config.mailgun_hosts, timeout)
    return Clients(
        config=config,
        http=http,
        conduits=conduits,
        projects=ProjectsLookup(conduits, config.storage_directory, reactor, timeout),
        dockerhub=DockerHubClient(http, config.dockerhub_base_url, timeout),
        mailgun=mailgun,
    )


class ClientsService(service.Service):
    """Makes the connection pool and reads the projects map caches at start;
    closes the connections at stop."""

    log = Logger()

    def __init__(self, clients: Clients):
        self.clients = clients

    def startService(self) -> None:
        super().startService()
        self.clients.http.start()
        # Lookups made before this is done wait for it.
        self.clients.projects.load(self.clients.config.services)

    def stopService(self):
        super().stopService()
        return self.clients.http.close()
