"""Jenkins Notification plugin payloads as notification texts (docs/reference.rst §3.3, §4.3)."""

from __future__ import annotations

from typing import Any

from ..analyzers import AnalyzerConfig
from . import text_at

#: The statuses a job listed in ``notifyOnlyOnFailure`` is still announced with.
FAILURE_STATUSES = frozenset({"FAILURE", "ABORTED", "UNSTABLE"})


def is_valid(payload: Any) -> bool:
    """Whether the payload is one the gate accepts: a JSON object with a string
    ``name`` and an object ``build`` with a string ``phase``."""
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        return False
    build = payload.get("build")
    return isinstance(build, dict) and isinstance(build.get("phase"), str)


def render(payload: Any) -> tuple[str, str, str, str]:
    """``(type, text, link, job)`` of a build notification.

    The type is the lowercase phase, plus ``.`` and the lowercase status when
    there is one (``completed.success``, ``started``), as consumers bind on.
    """
    job = text_at(payload, "name")
    phase = text_at(payload, "build", "phase").lower()
    status = text_at(payload, "build", "status").lower()
    type_ = f"{phase}.{status}" if status else phase
    text = f"Jenkins job {job} has been {phase}"
    if status:
        text += f": {status}"
    return type_, text, text_at(payload, "build", "full_url"), job


def should_notify(job: str, status: str | None, analyzer: AnalyzerConfig) -> bool:
    """Whether a build is announced at all.

    A job listed in ``notifyOnlyOnFailure`` is announced only when its status
    is ``FAILURE``, ``ABORTED`` or ``UNSTABLE``; every other job always is.
    """
    if job not in analyzer.notify_only_on_failure:
        return True
    return isinstance(status, str) and status.upper() in FAILURE_STATUSES
