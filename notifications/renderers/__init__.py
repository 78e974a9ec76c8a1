"""Renderers: turn a service's payload into the text and link of a notification
(docs/reference.rst §4).

One module per service, each a set of pure functions (no I/O; the only
Twisted piece is a debug log of the payloads a renderer could not read), so
that a gate, the ``payload`` command and the tests all get the same texts.

Payloads come from the outside and may have any shape, so renderers read them
only through the helpers below: :func:`dig` and :func:`text_at` never raise,
and :func:`need` raises :class:`UnreadablePayload` for a field a text cannot
do without, which the service's ``render`` turns into its fallback text.
"""

from __future__ import annotations

from typing import Any


class UnreadablePayload(ValueError):
    """A field a renderer needs is missing, null or of the wrong type."""


def dig(payload: Any, *path: str | int, default: Any = "") -> Any:
    """Walk ``path`` (dict keys and list indexes) into ``payload``.

    Return ``default`` when a key or index is missing, a value on the way is
    None, or a step meets a value it cannot walk into (a string where an
    object was expected, a key on a list…).
    """
    value = payload
    for step in path:
        if isinstance(value, dict) and isinstance(step, str):
            value = value.get(step)
        elif isinstance(value, list) and isinstance(step, int) and not isinstance(step, bool):
            if not -len(value) <= step < len(value):
                return default
            value = value[step]
        else:
            return default
        if value is None:
            return default
    return value


def text_of(value: Any, default: str = "") -> str:
    """A JSON scalar as text; ``default`` for None, objects and lists.

    Booleans are spelt as in JSON rather than Python's ``True``.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return default


def text_at(payload: Any, *path: str | int, default: str = "") -> str:
    """The text at ``path`` in ``payload``, or ``default`` (see :func:`dig`, :func:`text_of`)."""
    return text_of(dig(payload, *path, default=None), default)


def need(payload: Any, *path: str | int) -> str:
    """The text at ``path``, which the text being built cannot do without.

    Raise :class:`UnreadablePayload` when it is missing, null, or not a string
    or a number (an empty string is fine: it is what the service sent).
    """
    value = dig(payload, *path, default=None)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise UnreadablePayload(".".join(str(step) for step in path))
    return text_of(value)
