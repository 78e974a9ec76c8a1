"""The daemon's log observers, and how the runner (twistd or twist) is asked for them.

``--json-logs`` gives twisted.logger's JSON, one object per line; otherwise
the lines are twisted.logger's classic text, for less CPU: Twisted's text
observer formats the time of every event from scratch (two time-zone
lookups and a ``strftime``), 7 of the 18 µs that one call line costs in it,
measured, and the daemon writes a line per gate call. The lines here are
the same, byte for byte: Twisted's own ``formatEventAsClassicLogText``
writes them, with a time formatter that remembers the text of the last
second (the format has no finer unit).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

from twisted.logger import (
    FileLogObserver,
    formatEventAsClassicLogText,
    formatTime,
    jsonFileLogObserver,
    timeFormatRFC3339,
)


class SecondTimeFormatter:
    """``formatTime(when, timeFormatRFC3339)``, remembered for the last second seen.

    Exact for any time format whose smallest unit is the second (the text
    cannot change within one), which is why the format is not a parameter;
    the last microsecond of a second, which datetime may round up into the
    next one, is formatted every time.
    """

    def __init__(self):
        # One tuple, replaced whole: events may be logged from other threads.
        self._last: tuple[int, str] | None = None

    def __call__(self, when: float | None) -> str:
        if type(when) is not float and type(when) is not int:
            return formatTime(when, timeFormatRFC3339)  # None, or anything odd: Twisted decides
        second = math.floor(when)
        if when - second >= 0.999_999:
            # datetime rounds to the microsecond: this may be the next second.
            return formatTime(when, timeFormatRFC3339)
        last = self._last
        if last is None or last[0] != second:
            last = self._last = (second, formatTime(when, timeFormatRFC3339))
        return last[1]


def classic_formatter(prefix: str = "") -> Callable[[dict], str | None]:
    """A ``formatEvent`` for :class:`FileLogObserver`: Twisted's classic line, after ``prefix``.

    None (nothing written) for an event with no text, as Twisted's own.
    """
    format_time = SecondTimeFormatter()

    def format_event(event: dict) -> str | None:
        text = formatEventAsClassicLogText(event, formatTime=format_time)
        return None if text is None else prefix + text

    return format_event


def text_log_observer() -> FileLogObserver:
    """twistd's ``--logger`` factory for its default under ``-n``: text lines on standard output."""
    return FileLogObserver(sys.stdout, classic_formatter())


def json_log_observer() -> FileLogObserver:
    """twistd's ``--logger`` factory for ``--json-logs``: JSON lines on standard output."""
    return jsonFileLogObserver(sys.stdout)


def use_log_observer(runner_options, json_logs: bool) -> None:
    """Ask the runner for the daemon's observer; it starts logging after the options.

    ``json_logs``: JSON, always (``twist --log-format json``, or
    :func:`json_log_observer` for twistd). Text: :func:`text_log_observer`,
    only under ``twistd -n`` where twistd would have written the same lines to
    standard output itself: no ``--logfile`` (or ``--logfile -``),
    ``--syslog`` or ``--logger`` given. A daemonized twistd (its own rotating
    ``twistd.log``) and ``twist`` keep their text observers.
    """
    if runner_options is None:
        return
    if hasattr(runner_options, "opt_log_format"):  # twist
        if json_logs:
            runner_options.opt_log_format("json")
        return
    # twistd resolves these names once every option is parsed.
    if json_logs:
        runner_options["logger"] = f"{__name__}.json_log_observer"
    elif (
        runner_options.get("nodaemon")
        and runner_options.get("logfile") in (None, "", "-")
        and not runner_options.get("syslog")
        and not runner_options.get("logger")
    ):
        runner_options["logger"] = f"{__name__}.text_log_observer"
