"""Why gate calls fail, door by door (reference §2.6).

A refused call has one reason from a closed set (:data:`REASONS`), set where
the refusal is raised (a :class:`~notifications.gates.GateError`'s ``code``,
or the HTTP layer's own checks). :class:`DoorActivity` keeps, for each door
of the credentials file, its last call (time, event, status code) and its
refusals of the last hour counted by reason, for ``/config`` and the status
page; calls refused on doors the file does not declare are kept too, for at
most :data:`MAX_UNDECLARED` doors (the rest are counted together, per gate),
since any caller can make up a door. Nothing of a call's content is kept: no
secret, no payload.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

SIGNATURE_MISMATCH = "signature_mismatch"
MISSING_SIGNATURE = "missing_signature"
UNPROTECTED_DOOR = "unprotected_door"
UNKNOWN_DOOR = "unknown_door"
BAD_JSON = "bad_json"
BAD_PAYLOAD = "bad_payload"
MISSING_HEADER = "missing_header"
BAD_HEADER = "bad_header"
ROUTING_KEY_TOO_LONG = "routing_key_too_long"
NOT_CONFIGURED = "not_configured"
BODY_TOO_LARGE = "body_too_large"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
TOO_MANY_CALLS = "too_many_calls"
SHUTTING_DOWN = "shutting_down"
INTERNAL_ERROR = "internal_error"

#: Every reason a call may be refused for, and what it means.
REASONS: dict[str, str] = {
    SIGNATURE_MISMATCH: "a signature or token was given and matches no secret of the door",
    MISSING_SIGNATURE: "the door has a secret and the call carries no signature or token",
    UNPROTECTED_DOOR: "the door has no secret (or HMAC key) and unsigned calls are not allowed",
    UNKNOWN_DOOR: "the door is not declared (GitHub) or not a Phabricator instance",
    BAD_JSON: "the body is not UTF-8, not JSON (or a form), not an object, or nested too deep",
    BAD_PAYLOAD: "the body is not what the gate reads (a field missing or of the wrong type)",
    MISSING_HEADER: "a header the gate needs is missing",
    BAD_HEADER: "a header the gate reads is malformed",
    ROUTING_KEY_TOO_LONG: "the notification's routing key is over 255 bytes",
    NOT_CONFIGURED: "the call needs something the daemon is not configured with",
    BODY_TOO_LARGE: "the body is larger than [gate] max_body_size (413)",
    UNSUPPORTED_MEDIA_TYPE: "the body's content type is not one the gate reads (415)",
    TOO_MANY_CALLS: "[gate] max_in_progress calls were in progress (503)",
    SHUTTING_DOWN: "the daemon was stopping (503)",
    INTERNAL_ERROR: "the gate failed on the call (500, see the log)",
}

#: The reason of a refusal whose gate named none, by status code.
_BY_STATUS = {400: BAD_PAYLOAD, 403: SIGNATURE_MISMATCH, 404: UNKNOWN_DOOR, 413: BODY_TOO_LARGE}


def reason_of(status: int, code: str | None) -> str:
    """The reason of a refusal: its code when it is one of :data:`REASONS`, else by status."""
    if code in REASONS:
        return code
    return _BY_STATUS.get(status, INTERNAL_ERROR)


#: Doors not in the credentials file that are kept apart; past it, one record per gate.
MAX_UNDECLARED = 50

#: The refusals shown are those of the last hour, counted per minute.
WINDOW = 3600
BUCKET = 60


class DoorRecord:
    """The last call of one door and its refusals, per minute, of the last hour."""

    __slots__ = ("buckets", "last")

    def __init__(self) -> None:
        #: ``(time, event, status)`` of the last call, or None.
        self.last: tuple[float, str | None, int] | None = None
        #: ``[minute, {reason: count}]``, oldest first, at most an hour's worth.
        self.buckets: deque[tuple[int, dict[str, int]]] = deque(maxlen=WINDOW // BUCKET + 1)

    def refused(self, reason: str, now: float) -> None:
        minute = int(now // BUCKET)
        if not self.buckets or self.buckets[-1][0] != minute:
            self.buckets.append((minute, {}))
        counts = self.buckets[-1][1]
        counts[reason] = counts.get(reason, 0) + 1

    def report(self, now: float) -> dict[str, Any]:
        """``{"lastCall": {"time", "event", "status"} | None, "refusals": {reason: n}}``."""
        oldest = int((now - WINDOW) // BUCKET) + 1
        refusals: dict[str, int] = {}
        for minute, counts in self.buckets:
            if minute >= oldest:
                for reason, count in counts.items():
                    refusals[reason] = refusals.get(reason, 0) + count
        last = None
        if self.last is not None:
            when, event, status = self.last
            last = {"time": round(when, 3), "event": event, "status": status}
        return {"lastCall": last, "refusals": dict(sorted(refusals.items()))}


class DoorActivity:
    """What happened at each door lately (see the module's docstring).

    ``clock`` is the reactor; ``doors`` the ``(gate, door)`` of the credentials
    file, given again at each reload (:meth:`declare`).
    """

    def __init__(self, clock, doors: Iterable[tuple[str, str]] = ()):
        self.clock = clock
        self._declared: dict[tuple[str, str], DoorRecord] = {}
        #: Keyed by ``(gate, door)``, or ``(gate, None)`` for the doors past the limit.
        self._undeclared: dict[tuple[str, str | None], DoorRecord] = {}
        self._named = 0
        self.declare(doors)

    def declare(self, doors: Iterable[tuple[str, str]]) -> None:
        """The doors of the credentials file: a door keeps its record across a reload,
        and one that was refused as undeclared brings its record along."""
        declared = {}
        for key in doors:
            record = self._declared.get(key) or self._undeclared.pop(key, None)
            declared[key] = record or DoorRecord()
        self._declared = declared
        self._named = sum(1 for _, door in self._undeclared if door is not None)

    def called(
        self, gate: str, door: str, status: int, event: str | None, reason: str | None
    ) -> None:
        """Record a call: accepted (``reason`` None) or refused for ``reason``."""
        key = (gate, door)
        record = self._declared.get(key)
        if record is None:
            record = self._undeclared.get(key)
            if record is None:
                if reason is None:
                    # Most gates take calls on any door: only refusals are kept.
                    return
                if self._named >= MAX_UNDECLARED:
                    self._forget_quiet_doors()
                if self._named >= MAX_UNDECLARED:
                    record = self._undeclared.setdefault((gate, None), DoorRecord())
                else:
                    record = self._undeclared[key] = DoorRecord()
                    self._named += 1
        now = self.clock.seconds()
        record.last = (now, event, status)
        if reason is not None:
            record.refused(reason, now)

    def _forget_quiet_doors(self) -> None:
        # An undeclared door with no refusal in the last hour gives up its place.
        now = self.clock.seconds()
        quiet = [
            key
            for key, record in self._undeclared.items()
            if key[1] is not None and not record.report(now)["refusals"]
        ]
        for key in quiet:
            del self._undeclared[key]
        self._named -= len(quiet)

    def door(self, gate: str, door: str) -> dict[str, Any]:
        """The record of a declared door (empty when it had no call)."""
        record = self._declared.get((gate, door))
        return (record or DoorRecord()).report(self.clock.seconds())

    def undeclared(self) -> list[dict[str, Any]]:
        """The undeclared doors refused lately, ``door`` None for the others past the limit,
        sorted by gate then door."""
        now = self.clock.seconds()
        entries = []
        for (gate, door), record in self._undeclared.items():
            report = record.report(now)
            if report["refusals"]:
                entries.append({"gate": gate, "door": door, **report})
        return sorted(
            entries, key=lambda entry: (entry["gate"], entry["door"] is None, entry["door"] or "")
        )
