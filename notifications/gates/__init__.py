"""The gates: one module per service behind the small contract of :mod:`.base`."""

from __future__ import annotations

from ..config import Config
from .base import Gate, GateCall, GateError, Outcome, Publication
from .github import GitHubGate
from .phabricator import PhabricatorGate
from .services import DockerHubGate, JenkinsGate, NotificationGate

__all__ = ["Gate", "GateCall", "GateError", "Outcome", "Publication", "make_gates"]


def make_gates(config: Config, mailgun=None, projects=None) -> dict[str, Gate]:
    """Build every gate once, keyed by the name used in ``/gate/<Gate>/``."""
    gates: list[Gate] = [
        NotificationGate(config),
        DockerHubGate(config, mailgun=mailgun),
        GitHubGate(config),
        JenkinsGate(config),
        PhabricatorGate(config, projects=projects),
    ]
    return {gate.name: gate for gate in gates}
