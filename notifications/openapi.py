"""The OpenAPI 3.0 document of the HTTP surface, served at ``GET /openapi.json``.

The document is built here, in Python, so that the shared pieces (the
actions report, the error answers) are written once; it is plain data and
never depends on the configuration: it describes every answer a daemon may
give, whatever its features, credentials and state (README, docs/reference.rst §2, §3, §6,
§7). What is particular to a gate (its body, its headers, its side actions)
comes from the gate's class (:class:`notifications.gates.base.GateDescription`),
and the texts, patterns and names from the code that uses them.
``tests/test_openapi.py`` runs schemathesis against a running daemon to keep
it honest.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from twisted.web.pages import notFound
from twisted.web.resource import Resource

from . import __version__
from .config import FEATURES
from .dashboard import RECENT
from .events import (
    BAD_REQUEST as EVENTS_BAD_REQUEST,
)
from .events import (
    EVENT_STREAM,
    FORBIDDEN,
    MAX_PATTERNS,
    RETRY_MS,
    UNAVAILABLE,
)
from .events import (
    UNAUTHORIZED as EVENTS_UNAUTHORIZED,
)
from .gates import Gate, gate_classes, gate_names
from .gates.base import BAD_REQUEST, UNAUTHORIZED
from .gates.phabricator import NOT_CACHED
from .http import (
    ALIVE,
    HEADERS_TOO_LARGE,
    PAYLOAD_TOO_LARGE,
    POST_ONLY,
    REQUEST_TIMEOUT,
    SHUTTING_DOWN,
    TOO_MANY_CALLS,
    UNSUPPORTED_MEDIA_TYPE,
)
from .notification import MAX_SHORTSTR, ROUTING_KEY_PATTERN
from .refusals import MAX_UNDECLARED, REASONS
from .report import (
    AMQP,
    AMQP_STATUSES,
    FAILED,
    MAILGUN,
    NOTIFY_NEW_COMMITS,
    REQUEST_ID_PATTERN,
    TRIGGER_BUILD,
)

OPENAPI_VERSION = "3.0.3"

TEXT = "text/plain"
JSON = "application/json"
HTML = "text/html"


def _one_of(names: list[str]) -> str:
    """``A``, ``A or B``, ``A, B or C``."""
    return " or ".join(filter(None, (", ".join(names[:-1]), names[-1])))


def _ref(kind: str, name: str) -> dict:
    return {"$ref": f"#/components/{kind}/{name}"}


def _text(description: str, schema: dict | None = None) -> dict:
    return {
        "description": description,
        "content": {TEXT: {"schema": {"type": "string", **(schema or {})}}},
    }


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _counter(description: str) -> dict:
    return {"type": "integer", "minimum": 0, "description": description}


def _object(properties: dict, required: list[str] | None = None, extra: bool = False) -> dict:
    return {
        "type": "object",
        "required": list(properties) if required is None else required,
        "properties": properties,
        "additionalProperties": extra,
    }


def _error_object(nullable: bool) -> dict:
    schema = _object(
        {
            "type": {"type": "string", "minLength": 1, "description": "The error's class."},
            "message": {"type": "string", "minLength": 1, "description": "What went wrong."},
        }
    )
    if nullable:
        schema["nullable"] = True
        schema["description"] = "null when the action succeeded."
    return schema


def _action(name: str, description: str, fields: dict) -> dict:
    schema = _object(
        {
            "action": {"type": "string", "enum": [name]},
            **fields,
            "error": _error_object(nullable=True),
        }
    )
    schema["description"] = description
    return schema


ACTIONS = {
    AMQP: _action(
        AMQP,
        "The notification stored in the outbox and published on the exchange.",
        {
            "method": {"type": "string", "enum": ["publish"]},
            "target": {"type": "string", "description": "The exchange."},
            "routingKey": {
                "type": "string",
                # project.group.service.type: four words and three dots at least.
                "minLength": 7,
                "maxLength": MAX_SHORTSTR,
                "pattern": ROUTING_KEY_PATTERN,
                "description": "project.group.service.type, lowercased and sanitized.",
            },
            "status": {
                "type": "string",
                "enum": list(AMQP_STATUSES),
                "description": "published: confirmed by the broker before the answer; "
                "queued: stored durably, published when the broker is back; "
                "failed: not stored (the only status with an error).",
            },
        },
    ),
    NOTIFY_NEW_COMMITS: _action(
        NOTIFY_NEW_COMMITS,
        "A GitHub push: Phabricator asked to fetch the new commits (diffusion.looksoon).",
        {"callSign": {"type": "string", "nullable": True}},
    ),
    TRIGGER_BUILD: _action(
        TRIGGER_BUILD,
        "A GitHub push: a Docker Hub build triggered.",
        {"image": {"type": "string"}},
    ),
    MAILGUN: _action(
        MAILGUN,
        "A Docker Hub build failure: the stored message fetched from Mailgun.",
        {"method": {"type": "string", "enum": ["GET"]}, "target": {"type": "string"}},
    ),
}


def _report(gate: type[Gate], accepted: bool) -> dict:
    """The actions report of a gate: 200 (no action has an error) or 503 (one has)."""
    kinds = (AMQP, *gate.openapi.side_actions)
    item: dict[str, Any] = {"oneOf": [_ref("schemas", kind) for kind in kinds]}
    if accepted:
        item = {
            "allOf": [
                item,
                {
                    "type": "object",
                    "properties": {
                        "error": {"type": "object", "nullable": True, "enum": [None]},
                        "status": {
                            "type": "string",
                            "enum": [status for status in AMQP_STATUSES if status != FAILED],
                        },
                    },
                },
            ]
        }
    properties: dict[str, Any] = {
        "gate": (
            dict(gate.openapi.report_gate)
            if gate.openapi.report_gate is not None
            else {"type": "string", "enum": [gate.name]}
        ),
        "door": {"type": "string", "description": "The door of the call."},
        "created": {"type": "integer", "minimum": 0, "description": "Unix time."},
        "actions": {"type": "array", "items": item},
        "requestId": {
            "type": "string",
            "pattern": REQUEST_ID_PATTERN,
            "description": "The call's id, also in its log line and X-Request-Id header.",
        },
    }
    if gate.openapi.duplicates and accepted:
        properties["duplicate"] = {
            "type": "boolean",
            "enum": [True],
            "description": "A redelivery (same X-GitHub-Delivery within the dedup window): "
            "nothing published, no action.",
        }
    schema = _object(properties, required=["gate", "door", "created", "actions", "requestId"])
    schema["description"] = (
        "What was done (no action has an error)."
        if accepted
        else "What was done; at least one action has an error (the notification could "
        "not be stored, or a side action failed)."
    )
    return schema


def _gate_post(gate: type[Gate]) -> dict:
    description = gate.openapi
    parameters: list[dict] = [_ref("parameters", "door"), *map(dict, description.headers)]
    if not gate.signs:
        parameters.append(_ref("parameters", "token"))
    request_id = {"X-Request-Id": _ref("headers", "X-Request-Id")}
    maybe_request_id = {"X-Request-Id": _ref("headers", "X-Request-Id-Optional")}
    responses: dict[str, Any] = {
        "200": {
            "description": "Accepted: the actions report (an empty text/plain body when the "
            "ActionsReport feature is off).",
            "headers": request_id,
            "content": {
                JSON: {"schema": _ref("schemas", f"{gate.name}Report")},
                TEXT: {"schema": {"type": "string", "maxLength": 0}},
            },
        },
        "400": {**_response("BadRequest"), "headers": request_id},
        "403": {**_response("Unauthorized"), "headers": request_id},
        "404": {**_response("NotFound"), "headers": maybe_request_id},
        "408": _ref("responses", "RequestTimeout"),
        "413": _ref("responses", "PayloadTooLarge"),
        "415": _ref("responses", "UnsupportedMediaType"),
        "431": _ref("responses", "HeadersTooLarge"),
        "503": {
            "description": "An action failed (the report), or the daemon is shutting down or "
            "has too many calls in progress (text/plain, with Retry-After).",
            "headers": {"Retry-After": _ref("headers", "Retry-After"), **maybe_request_id},
            "content": {
                JSON: {"schema": _ref("schemas", f"{gate.name}FailedReport")},
                TEXT: {"schema": {"type": "string", "enum": [SHUTTING_DOWN, TOO_MANY_CALLS]}},
            },
        },
    }
    operation: dict[str, Any] = {
        "operationId": f"post{gate.name}",
        "tags": ["gates"],
        "summary": description.summary,
        "description": description.description
        + " Bodies sent as text/json, text/plain, */*+json or with no content type are "
        "read as JSON too, as the older system did; any other type is 415.",
        "parameters": parameters,
        "requestBody": {"required": True, "content": dict(description.body)},
        "responses": dict(sorted(responses.items())),
    }
    if not gate.signs:
        # The gates whose callers do not sign take the door's secret as a token.
        operation["security"] = [{}, {"doorBearer": []}]
        operation["description"] += (
            " A door with a secret in the credentials needs it, as ?token=<secret> or "
            "Authorization: Bearer <secret> (403 otherwise); other doors are open."
        )
    return operation


def _gate_get(gate: str, door: bool) -> dict:
    operation = {
        "operationId": f"get{gate}" + ("Door" if door else ""),
        "tags": ["gates"],
        "summary": "Says to POST",
        "responses": {
            "404": _ref("responses", "NotFound"),
            "405": _ref("responses", "PostOnly"),
        },
    }
    if door:
        operation["parameters"] = [_ref("parameters", "door")]
    return operation


def _pattern(text: str) -> str:
    """``text`` in a regular expression, as itself (spaces stay as they are)."""
    return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", text)


def _error_text(description: str, first_line: str, reason: bool = True) -> dict:
    """An error answer: the older system's message, then (maybe) a line saying why."""
    return _text(
        description,
        {"pattern": f"^{_pattern(first_line)}\\n" + (r"(.*\n)?$" if reason else "$")},
    )


def _not_found() -> dict:
    # The gates' own 404 messages, then the HTML page of any other path.
    messages = dict.fromkeys(
        message for gate in gate_classes() for message in gate.openapi.not_found
    )
    first_lines = "|".join(_pattern(message) for message in messages)
    return {
        "description": "No such resource: text/plain from a gate (an unknown GitHub "
        "door when unsigned calls are not allowed, an unknown Phabricator "
        "instance), text/html for any other path.",
        "content": {
            TEXT: {"schema": {"type": "string", "pattern": f"^({first_lines})\\n" + r"(.*\n)?$"}},
            HTML: {"schema": {"type": "string"}},
        },
    }


def _responses() -> dict[str, Any]:
    """The answers shared by several operations (components/responses)."""
    return {
        "BadRequest": _error_text(
            "An invalid call (missing header, body that is not what the gate reads, "
            f"routing key over {MAX_SHORTSTR} bytes…). A request that is not valid HTTP (a "
            "malformed request line or header, headers over 16 KiB in total) gets a bare 400 "
            "Bad Request from the HTTP layer instead, with no body, and the connection is "
            "closed.",
            BAD_REQUEST,
        ),
        "Unauthorized": _error_text(
            "A missing or wrong signature or door token, or a GitHub door without a "
            "secret (unless allow_unsigned).",
            UNAUTHORIZED,
        ),
        "NotFound": _not_found(),
        "PostOnly": {
            "description": "A gate takes POST requests only.",
            "headers": {"Allow": _ref("headers", "Allow")},
            "content": {TEXT: {"schema": {"type": "string", "enum": [POST_ONLY]}}},
        },
        "RequestTimeout": _text(
            "The request did not arrive in full within [gate] request_timeout; the "
            "connection is closed.",
            {"enum": [REQUEST_TIMEOUT]},
        ),
        "PayloadTooLarge": _text(
            "The body is over [gate] max_body_size (refused as soon as its length is "
            "known); the connection is closed.",
            {"enum": [PAYLOAD_TOO_LARGE]},
        ),
        "UnsupportedMediaType": _error_text(
            "The body's content type is not one the gate reads.",
            UNSUPPORTED_MEDIA_TYPE,
        ),
        "HeadersTooLarge": _text(
            "The request line or headers are too long; the connection is closed.",
            {"enum": [HEADERS_TOO_LARGE]},
        ),
    }


def _response(name: str) -> dict:
    """A shared answer, copied, so that an operation can add its headers."""
    return _responses()[name]


def _outbox_state() -> dict:
    return _object(
        {
            "depth": _counter("Notifications stored, not yet confirmed."),
            "in_flight": _counter("Published, waiting for the confirm."),
            "in_memory": _counter("Waiting in memory to be published."),
            "published": _counter("Confirmed by the broker since the start."),
            "nacked": _counter("Refused by the broker (basic.nack), then retried."),
            "oldest_age": {
                "type": "number",
                "minimum": 0,
                "nullable": True,
                "description": "Seconds the oldest waiting notification has waited; "
                "null when none waits.",
            },
        }
    )


def _door_activity() -> dict:
    """A door's last call and its refusals of the last hour (reference §2.6)."""
    return {
        "lastCall": _object(
            {
                "time": {"type": "number", "minimum": 0, "description": "Unix time."},
                "event": {
                    "type": "string",
                    "nullable": True,
                    "description": "The event the gate read, null for a refused call.",
                },
                "status": {"type": "integer", "minimum": 100, "maximum": 599},
            }
        )
        | {"nullable": True, "description": "null when the door had no call since the start."},
        "refusals": {
            "type": "object",
            "description": "Calls refused in the last hour, by reason: "
            + "; ".join(f"{code}: {meaning}" for code, meaning in REASONS.items())
            + ".",
            "properties": {code: _counter(meaning) for code, meaning in REASONS.items()},
            "additionalProperties": False,
        },
    }


def _undeclared_doors() -> dict:
    return {
        "type": "array",
        "description": "Doors the credentials file does not declare that refused calls in the "
        f"last hour, at most {MAX_UNDECLARED} by name; door null counts the others, per gate.",
        "items": _object(
            {
                "gate": {"type": "string", "enum": list(gate_names())},
                "door": {"type": "string", "nullable": True},
                **_door_activity(),
            }
        ),
    }


def _status_json() -> dict:
    recent_fields = {
        "time": {"type": "integer", "minimum": 0},
        "service": {"type": "string"},
        "project": {"type": "string"},
        "group": {"type": "string"},
        "type": {"type": "string"},
        "text": {"type": "string"},
        "link": {"type": "string"},
        "routingKey": {"type": "string"},
        "messageId": {"type": "string"},
        "offset": {"type": "integer", "minimum": 0, "description": "In the archive."},
    }
    # Every entry has them all but its offset, which only the archive's have.
    required = [name for name in recent_fields if name != "offset"]
    recent = _object(recent_fields, required=required, extra=True)
    outbox = _outbox_state()
    outbox["properties"]["error"] = {"type": "string", "enum": ["outbox unreadable"]}
    return _object(
        {
            "version": {"type": "string"},
            "now": {"type": "number"},
            "exchange": {"type": "string"},
            "gates": _object(
                {
                    "enabled": {"type": "boolean"},
                    "names": {
                        "type": "array",
                        "items": {"type": "string", "enum": list(gate_names())},
                    },
                }
            ),
            "config": {"type": "boolean", "description": "Whether /config is served."},
            "broker": _ref("schemas", "BrokerState"),
            "outbox": outbox,
            "recent": {"type": "array", "items": recent, "maxItems": RECENT},
            "recentFrom": {
                "type": "string",
                "enum": ["archive", "process"],
                "description": "archive: the archive stream's last notifications (the same "
                "on every worker and instance); process: those this process accepted.",
            },
            "doors": {
                "type": "array",
                "description": "The doors of the credentials file, in its order.",
                "items": _object(
                    {
                        "gate": {"type": "string", "enum": list(gate_names())},
                        "door": {"type": "string"},
                        **_door_activity(),
                    }
                ),
            },
            "undeclaredDoors": _undeclared_doors(),
            "events": {**_events_state(), "nullable": True},
            "subscriptions": {"type": "array", "items": _subscription_state()},
        },
        extra=True,
    )


def _events_get() -> dict:
    """``GET /events`` (reference §10)."""
    return {
        "operationId": "getEvents",
        "tags": ["consumers"],
        "summary": "Server-sent events: the notifications a consumer may read, as they come",
        "description": "Authenticated by a consumer's token ([[consumers]]), as "
        "Authorization: Bearer or ?token= (a browser's EventSource cannot set headers). "
        "Each notification is an event named notification whose data is the message's "
        "JSON and whose id is its offset in the archive: reconnecting with Last-Event-ID "
        "resumes right after it; an event named gap says that the archive no longer "
        "holds what followed it. Comments keep an idle stream open. A pattern may be "
        "asked for only if every routing key it matches is one the consumer may read; "
        "without pattern, everything it may read. Served on the public port too.",
        "security": [{"consumerBearer": []}, {"consumerToken": []}],
        "parameters": [
            {
                "name": "pattern",
                "in": "query",
                "required": False,
                "description": f"Routing-key patterns (topic rules), at most {MAX_PATTERNS}.",
                "schema": {"type": "array", "items": {"type": "string"}},
                "style": "form",
                "explode": True,
                "example": ["acme.#"],
            },
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "description": "The id of the last event received: the stream resumes after it.",
                "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"},
            },
        ],
        "responses": {
            "200": {
                "description": f"The stream ({EVENT_STREAM}): first retry: {RETRY_MS}, then "
                "events and comments, for as long as the client reads.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            "400": _error_text(
                "A pattern that is not one, too many patterns, a Last-Event-ID that is not "
                "an event id.",
                EVENTS_BAD_REQUEST,
            ),
            "401": {
                **_error_text("No token, or not a consumer's.", EVENTS_UNAUTHORIZED),
                "headers": {"WWW-Authenticate": _ref("headers", "WWW-Authenticate")},
            },
            "403": _error_text(
                "A pattern that matches routing keys the consumer may not read, or a "
                "consumer that may read none.",
                FORBIDDEN,
            ),
            "503": {
                **_error_text(
                    "The archive is off (no Retry-After: it takes a configuration change), "
                    "or too many streams are open, the broker is not connected, the archive "
                    "cannot be read (with Retry-After).",
                    UNAVAILABLE,
                ),
                "headers": {"Retry-After": _ref("headers", "Retry-After-Optional")},
            },
        },
    }


def _events_state() -> dict:
    return _object(
        {
            "enabled": {"type": "boolean", "description": "Whether the archive is on."},
            "open": _counter("Streams open in this process."),
            "opened": _counter("Streams started since the start."),
            "sent": _counter("Notifications sent on streams."),
            "tooSlow": _counter("Clients dropped because they read too slowly."),
            "maxStreams": {"type": "integer", "minimum": 1},
        }
    )


def _subscription_state() -> dict:
    optional_time = {"type": "number", "nullable": True}
    return _object(
        {
            "name": {"type": "string"},
            "receiver": {"type": "string", "description": "The URL's scheme, host and port."},
            "delivered": _counter("Notifications the receiver took (2xx)."),
            "retried": _counter("Failed attempts followed by another."),
            "deadLettered": _counter("Given up on after max_attempts."),
            "skipped": _counter("Routing keys no configured pattern matches any more."),
            "waiting": {"type": "integer", "minimum": 0, "nullable": True},
            "dead": {"type": "integer", "minimum": 0, "nullable": True},
            "lastError": {"type": "string", "nullable": True},
            "lastErrorTime": optional_time,
            "lastDeliveredTime": optional_time,
        }
    )


def document() -> dict:
    """The OpenAPI document: new, plain JSON data on each call."""
    return copy.deepcopy(_document())


def _document() -> dict:
    paths: dict[str, Any] = {
        "/": {
            "get": {
                "operationId": "getStatusPage",
                "tags": ["status"],
                "summary": "The status page (HTML)",
                "responses": {"200": {"description": "The page.", "content": {HTML: {}}}},
            }
        },
        "/status": {
            "get": {
                "operationId": "getStatus",
                "tags": ["status"],
                "summary": f"Liveness probe: always {ALIVE}",
                "responses": {"200": _text("The daemon is up.", {"enum": [ALIVE]})},
            }
        },
        "/status.json": {
            "get": {
                "operationId": "getStatusFeed",
                "tags": ["status"],
                "summary": "What the status page shows (never a secret)",
                "responses": {"200": _json("The page's data.", _status_json())},
            }
        },
        "/static/{name}": {
            "get": {
                "operationId": "getStaticFile",
                "tags": ["status"],
                "summary": "The status page's script, stylesheet and icon",
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1},
                        "example": "app.js",
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The file.",
                        "content": {
                            "text/javascript": {},
                            "text/css": {},
                            "image/svg+xml": {},
                        },
                    },
                    "404": _ref("responses", "NotFound"),
                },
            }
        },
        "/health": {
            "get": {
                "operationId": "getHealth",
                "tags": ["status"],
                "summary": "Broker state and outbox figures",
                "responses": {
                    "200": _json("The state.", _ref("schemas", "Health")),
                    "503": _json(
                        "The outbox could not be read.",
                        _object(
                            {
                                "status": {"type": "string", "enum": ["error"]},
                                "error": {"type": "string"},
                            }
                        ),
                    ),
                },
            }
        },
        "/config": {
            "get": {
                "operationId": "getConfig",
                "tags": ["status"],
                "summary": "The configuration report (never a secret)",
                "description": "404 when the GetConfig feature is off.",
                "responses": {
                    "200": _json("The report.", _ref("schemas", "ConfigReport")),
                    "404": _ref("responses", "NotFound"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "tags": ["status"],
                "summary": "Prometheus metrics",
                "description": "The text format; the OpenMetrics format when the Accept "
                "header asks for application/openmetrics-text.",
                "responses": {
                    "200": {
                        "description": "The metrics.",
                        "content": {
                            TEXT: {"schema": {"type": "string"}},
                            "application/openmetrics-text": {"schema": {"type": "string"}},
                        },
                    }
                },
            }
        },
        "/events": {"get": _events_get()},
        "/openapi.json": {
            "get": {
                "operationId": "getOpenAPI",
                "tags": ["status"],
                "summary": "This document",
                "responses": {
                    "200": _json(
                        "The OpenAPI document.",
                        {
                            "type": "object",
                            "required": ["openapi", "info", "paths"],
                            "properties": {
                                "openapi": {"type": "string", "enum": [OPENAPI_VERSION]}
                            },
                        },
                    )
                },
            }
        },
    }
    gates = gate_classes()
    for gate in gates:
        paths[f"/gate/{gate.name}/"] = {"get": _gate_get(gate.name, door=False)}
        paths[f"/gate/{gate.name}/{{door}}"] = {
            "get": _gate_get(gate.name, door=True),
            "post": _gate_post(gate),
        }

    schemas: dict[str, Any] = {
        **ACTIONS,
        **{name: schema for gate in gates for name, schema in gate.openapi.schemas.items()},
        "BrokerState": _object(
            {
                "connected": {"type": "boolean"},
                "node": {
                    "type": "string",
                    "nullable": True,
                    "description": "The node (host:port) connected to; null while disconnected.",
                },
                "since": {
                    "type": "number",
                    "description": "Unix time the connection came up (or was lost).",
                },
                "reconnects": _counter("Connections made after the first one."),
                "unroutable": _counter("Notifications no queue was bound for."),
                "unconfirmed": _counter("Publications waiting for the broker's confirm."),
            }
        ),
        "OutboxState": _outbox_state(),
        "Health": _object(
            {
                "status": {
                    "type": "string",
                    "enum": ["ok", "degraded"],
                    "description": "degraded while the broker is not connected.",
                },
                "broker": _ref("schemas", "BrokerState"),
                "outbox": _ref("schemas", "OutboxState"),
                "archive": _object(
                    {
                        "enabled": {"type": "boolean"},
                        "queue": {"type": "string"},
                        "on": {
                            "type": "boolean",
                            "description": "Enabled and declared: notifications are archived.",
                        },
                        "error": {
                            "type": "string",
                            "nullable": True,
                            "description": "Why the broker refused the stream.",
                        },
                    }
                ),
            }
        ),
        "ConfigReport": _object(
            {
                "gates": {
                    "type": "array",
                    "description": "Every gate, or none when the Gate feature is off.",
                    "items": {"type": "string", "enum": list(gate_names())},
                    "uniqueItems": True,
                },
                "features": {
                    "type": "array",
                    "items": _object(
                        {
                            "name": {"type": "string", "enum": list(FEATURES)},
                            "enabled": {"type": "boolean"},
                        }
                    ),
                },
                "services": {
                    "type": "array",
                    "items": _object(
                        {
                            "gate": {"type": "string", "enum": list(gate_names())},
                            "door": {"type": "string"},
                            "instance": {"type": "string", "nullable": True},
                            "status": {
                                "type": "string",
                                "description": f"{NOT_CACHED} for a Phabricator "
                                "instance whose projects map is not cached, else empty.",
                            },
                            **_door_activity(),
                        }
                    ),
                },
                "undeclaredDoors": _undeclared_doors(),
                "consumers": {
                    "type": "array",
                    "description": "The consumers of /events, without their tokens.",
                    "items": _object(
                        {
                            "name": {"type": "string"},
                            "patterns": {"type": "array", "items": {"type": "string"}},
                        }
                    ),
                },
                "subscriptions": {
                    "type": "array",
                    "description": "The outgoing webhooks, without their secrets; the "
                    "receiver is the URL's scheme, host and port only.",
                    "items": _object(
                        {
                            "name": {"type": "string"},
                            "receiver": {"type": "string"},
                            "patterns": {"type": "array", "items": {"type": "string"}},
                            "allowPrivate": {"type": "boolean"},
                            "initialDelay": {"type": "number"},
                            "maxDelay": {"type": "number"},
                            "maxAttempts": {"type": "integer", "minimum": 1},
                        }
                    ),
                },
            }
        ),
    }
    for gate in gates:
        schemas[f"{gate.name}Report"] = _report(gate, accepted=True)
        schemas[f"{gate.name}FailedReport"] = _report(gate, accepted=False)
    token_gates = sorted(gate.name for gate in gates if not gate.signs)

    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Notifications center",
            "version": __version__,
            "description": "Receives webhooks on the gates, makes each notification durable in "
            "an outbox, publishes it on a RabbitMQ topic exchange and answers with the actions "
            "report. Error answers are text/plain: the first line is the message of the older "
            "system, the second says what was wrong. Any path not listed here is 404.",
        },
        "tags": [
            {
                "name": "gates",
                "description": "POST /gate/<Gate>/<door>: gate names are "
                "case-sensitive; the door is the last path segment.",
            },
            {"name": "status", "description": "Monitoring and introspection."},
            {
                "name": "consumers",
                "description": "Reading notifications over HTTP, with a consumer's token.",
            },
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "parameters": {
                "door": {
                    "name": "door",
                    "in": "path",
                    "required": True,
                    "description": "The door: for service gates, the project (e.g. the GitHub "
                    "organization).",
                    "schema": {"type": "string", "minLength": 1},
                    "example": "Acme",
                },
                "token": {
                    "name": "token",
                    "in": "query",
                    "required": False,
                    "description": "The door's secret, when the door has one in the "
                    "credentials (or send it as Authorization: Bearer).",
                    "schema": {"type": "string"},
                },
            },
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before calling again (shutting down).",
                    "schema": {"type": "integer", "minimum": 0},
                },
                "Retry-After-Optional": {
                    "description": "Seconds to wait before asking again, when it is worth it.",
                    "schema": {"type": "integer", "minimum": 0},
                },
                "WWW-Authenticate": {
                    "required": True,
                    "description": 'Bearer realm="notifications" (with error="invalid_token" '
                    "for a token that is not a consumer's).",
                    "schema": {"type": "string", "pattern": '^Bearer realm="notifications"'},
                },
                "X-Request-Id": {
                    "required": True,
                    "description": "The call's id, also in its log line (and report).",
                    "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
                },
                "X-Request-Id-Optional": {
                    "description": "The call's id, when the call reached its gate.",
                    "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
                },
                "Allow": {
                    "required": True,
                    "description": "The only method a gate takes.",
                    "schema": {"type": "string", "enum": ["POST"]},
                },
            },
            "responses": _responses(),
            "securitySchemes": {
                "doorBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": f"The door's secret, for a {_one_of(token_gates)} "
                    "door that has one (or send it as ?token=).",
                },
                "consumerBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A consumer's token ([[consumers]]), for /events.",
                },
                "consumerToken": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "token",
                    "description": "A consumer's token as ?token=, for a browser's EventSource.",
                },
            },
        },
    }


class OpenAPIResource(Resource):
    """``GET /openapi.json``: the document, serialized once, at construction."""

    def __init__(self, value: dict | None = None):
        super().__init__()
        self.body = json.dumps(document() if value is None else value, ensure_ascii=False).encode()

    def getChild(self, path, request):
        return notFound()

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return self.body
