"""The actions report a gate answers with (docs/reference.rst §6)."""

from __future__ import annotations

from typing import Any

#: The kinds of entries of the report: the publication, and each side action.
AMQP = "AMQPAction"
NOTIFY_NEW_COMMITS = "NotifyNewCommitsAction"
TRIGGER_BUILD = "TriggerDockerHubBuildAction"
MAILGUN = "MailgunAction"

#: A call's id is this many random bytes, in hex: ``requestId``, the
#: ``X-Request-Id`` header and the call's log line.
REQUEST_ID_BYTES = 8
REQUEST_ID_PATTERN = f"^[0-9a-f]{{{REQUEST_ID_BYTES * 2}}}$"

#: The ``status`` of an ``AMQPAction``: confirmed by the broker before the
#: answer, stored durably and published when the broker is back, or not stored.
PUBLISHED = "published"
QUEUED = "queued"
FAILED = "failed"
AMQP_STATUSES = (PUBLISHED, QUEUED, FAILED)


def error_entry(error: BaseException | None) -> dict[str, str] | None:
    """``{"type", "message"}`` of an error, or None.

    Only our own exception classes and messages reach here: the messages are
    written for callers and never carry a secret or a traceback.
    """
    if error is None:
        return None
    return {"type": type(error).__name__, "message": str(error) or type(error).__name__}


def amqp_action(
    exchange: str, routing_key: str, error: BaseException | None = None, status: str = FAILED
) -> dict:
    """The report entry of one publication.

    ``status`` is ``published`` (the broker confirmed it before the answer),
    ``queued`` (stored durably, the broker will get it) or ``failed`` (not
    stored: the only case with an error).
    """
    return {
        "action": AMQP,
        "method": "publish",
        "target": exchange,
        "routingKey": routing_key,
        "status": status,
        "error": error_entry(error),
    }


def side_action(action: str, error: BaseException | None = None, **fields: Any) -> dict:
    """The report entry of a side action: its kind, its own fields, its error."""
    return {"action": action, **fields, "error": error_entry(error)}


def make_report(
    gate: str,
    door: str,
    created: int,
    actions: list[dict[str, Any] | None],
    request_id: str = "",
) -> dict:
    """The report; a side action that had nothing to do gave None, which is left out.

    ``requestId`` is also in the call's log line and ``X-Request-Id`` header.
    """
    report = {
        "gate": gate,
        "door": door,
        "created": created,
        "actions": [action for action in actions if action is not None],
    }
    if request_id:
        report["requestId"] = request_id
    return report


def report_status(actions: list[dict[str, Any]]) -> int:
    """200 when no action has an error, else 503."""
    return 503 if any(action.get("error") for action in actions) else 200
