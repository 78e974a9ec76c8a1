"""The gates: one module per service behind the small contract of :mod:`.base`."""

from __future__ import annotations

from ..config import Config
from .base import Gate, GateCall, GateError, Outcome, Publication
from .github import GitHubGate
from .phabricator import PhabricatorGate
from .services import DockerHubGate, JenkinsGate, NotificationGate

__all__ = ["Gate", "GateCall", "GateError", "Outcome", "Publication", "make_gates"]


def make_gates(
    config: Config, mailgun=None, projects=None, phabricator=None, dockerhub=None
) -> dict[str, Gate]:
    """Build every gate once, keyed by the name used in ``/gate/<Gate>/``.

    The collaborators make the HTTP calls (:mod:`notifications.clients`);
    without them, the gates make none: no projects for Phabricator stories, no
    side actions for GitHub pushes, Docker Hub build failures refused.
    """
    gates: list[Gate] = [
        NotificationGate(config),
        DockerHubGate(config, mailgun=mailgun),
        GitHubGate(config, phabricator=phabricator, dockerhub=dockerhub),
        JenkinsGate(config),
        PhabricatorGate(config, projects=projects),
    ]
    return {gate.name: gate for gate in gates}
