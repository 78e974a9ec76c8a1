"""The gates: one module per service behind the small contract of :mod:`.base`.

What a gate *is* lives on its class (the class attributes of
:class:`~.base.Gate`): its name, whether its callers sign, the clients it
needs, how a caller signs a call, its OpenAPI description, its ``/config``
status text. :data:`GATE_CLASSES` is the one list of the gates: the
configuration, the web site, the command line and the OpenAPI document read it
through the functions below, so a new gate is a module and an entry there.

The gate modules import the configuration only to name its types: the
configuration checks the credentials file against this list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Gate, GateCall, GateError, Outcome, Publication
from .github import GitHubGate
from .phabricator import PhabricatorGate
from .services import DockerHubGate, JenkinsGate, NotificationGate

if TYPE_CHECKING:
    from ..config import Config

__all__ = [
    "GATE_CLASSES",
    "Gate",
    "GateCall",
    "GateError",
    "Outcome",
    "Publication",
    "gate_class",
    "gate_classes",
    "gate_clients",
    "gate_names",
    "make_gates",
    "signing_gates",
]

#: Every gate, in the order ``/config`` and the status page list them.
GATE_CLASSES: list[type[Gate]] = [
    NotificationGate,
    DockerHubGate,
    GitHubGate,
    JenkinsGate,
    PhabricatorGate,
]


def gate_classes() -> tuple[type[Gate], ...]:
    """Every gate class, in the order of :data:`GATE_CLASSES`."""
    return tuple(GATE_CLASSES)


def gate_names() -> tuple[str, ...]:
    """The names of the gates, as in ``/gate/<name>/`` and the credentials file."""
    return tuple(gate.name for gate in GATE_CLASSES)


def gate_class(name: Any) -> type[Gate] | None:
    """The gate called ``name`` (case-sensitive), or None."""
    for gate in GATE_CLASSES:
        if gate.name == name:
            return gate
    return None


def signing_gates() -> tuple[str, ...]:
    """The gates whose callers sign their calls: the only ones ``allow_unsigned`` may list."""
    return tuple(gate.name for gate in GATE_CLASSES if gate.signs)


def gate_clients() -> tuple[str, ...]:
    """Every client some gate takes (attributes of :class:`notifications.clients.Clients`)."""
    names: dict[str, None] = {}
    for gate in GATE_CLASSES:
        names.update(dict.fromkeys((*gate.clients, *gate.side_action_clients)))
    return tuple(names)


def make_gates(config: Config, clock=None, **clients: Any) -> dict[str, Gate]:
    """Build every gate once, keyed by the name used in ``/gate/<Gate>/``.

    ``clients`` (named as in :func:`gate_clients`) make the HTTP calls
    (:mod:`notifications.clients`); each gate gets those it declares, and
    without them makes none: no projects for Phabricator stories, no side
    actions for GitHub pushes, Docker Hub build failures refused. The
    ``clock`` (the reactor) tells whether a previous secret is still accepted.
    """
    unknown = sorted(set(clients) - set(gate_clients()))
    if unknown:
        raise TypeError(f"make_gates: no gate takes the client {unknown[0]!r}")
    gates = {}
    for gate in GATE_CLASSES:
        wanted = (*gate.clients, *gate.side_action_clients)
        gates[gate.name] = gate(config, clock=clock, **{name: clients.get(name) for name in wanted})
    return gates
