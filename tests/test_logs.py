"""The daemon's text log lines: Twisted's, byte for byte, and who writes them.

``notifications.logs`` remembers the timestamp of the last second instead
of formatting it for every event; everything else is Twisted's own
``formatEventAsClassicLogText``. Its lines are compared with Twisted's for
generated sequences of events (in UTC and in a zone with daylight saving
time, across its changes), and the choice of observer is checked on
twistd's own parsing of command lines.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import FileLogObserver, LogLevel, formatEventAsClassicLogText
from twisted.python.failure import Failure
from twisted.scripts.twistd import ServerOptions

from notifications import logs
from tests.conftest import make_config, test_broker

#: 2026-03-29 01:00:00 UTC: Europe/Paris goes from +0100 to +0200.
DST_CHANGE = 1_774_746_000


@contextmanager
def zone(name: str):
    before = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def _failure() -> Failure:
    try:
        raise ValueError("boom")
    except ValueError:
        return Failure()


times = st.one_of(
    st.floats(min_value=-2_000_000_000, max_value=4_000_000_000, allow_nan=False),
    st.integers(min_value=-2_000_000_000, max_value=4_000_000_000),
    st.floats(min_value=DST_CHANGE - 3, max_value=DST_CHANGE + 3),
    st.just(None),
)
texts = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="{}"), max_size=30)


@st.composite
def events(draw) -> dict:
    event = {"log_time": draw(times)}
    shape = draw(st.sampled_from(["line", "fields", "literal", "none", "system", "failure"]))
    if draw(st.booleans()):
        event["log_namespace"] = draw(st.sampled_from(["notifications.web.CallHandler", "x"]))
    if draw(st.booleans()):
        event["log_level"] = draw(st.sampled_from(list(LogLevel.iterconstants())))
    if shape == "line":
        event.update(log_format="{line}", line=draw(texts), status=200)
    elif shape == "fields":
        event.update(log_format="{a} and {b!r}", a=draw(texts), b=draw(st.integers()))
    elif shape == "literal":
        event["log_format"] = draw(texts)
    elif shape == "system":
        event.update(log_format="{line}", line=draw(texts), log_system=draw(texts))
    elif shape == "failure":
        event.update(log_format="failed: {why}", why=draw(texts), log_failure=_failure())
    return event


@settings(max_examples=300, deadline=None)
@given(sequence=st.lists(events(), min_size=1, max_size=12))
def test_the_lines_are_twisteds(sequence):
    for name in ("UTC", "Europe/Paris"):
        with zone(name):
            # One formatter for the whole sequence: the remembered second carries over.
            format_event = logs.classic_formatter()
            for event in sequence:
                assert format_event(event) == formatEventAsClassicLogText(event), name


def test_each_second_is_formatted_once_and_right():
    format_time = logs.SecondTimeFormatter()
    first = format_time(1_800_000_000.1)
    assert format_time(1_800_000_000.9) is first  # remembered within the second
    later = format_time(1_800_000_001.0)
    assert later != first and later == logs.formatTime(1_800_000_001.0)
    assert format_time(1_800_000_000.5) == first  # going back: formatted again, same text
    assert format_time(None) == "-"
    # datetime rounds to the microsecond: the last one of a second is the next.
    edge = 1_800_000_001 - 1e-7
    assert format_time(edge) == logs.formatTime(edge) == later
    assert format_time(1_800_000_000.2) == first


def test_a_prefix_goes_before_each_line_and_an_empty_event_writes_nothing(tmp_path):
    path = tmp_path / "log"
    with path.open("w") as output:
        observer = FileLogObserver(output, logs.classic_formatter("[worker 1] "))
        observer({"log_format": "", "log_time": 1_800_000_000.0})
        observer({"log_format": "two\nlines", "log_time": 1_800_000_000.0, "log_system": "s"})
        observer({"log_time": 1_800_000_000.0})
    stamp = logs.formatTime(1_800_000_000.0)
    assert path.read_text() == f"[worker 1] {stamp} [s] two\n\tlines\n"


def _parsed(tmp_path: Path, *before: str, after: tuple[str, ...] = ()) -> ServerOptions:
    make_config(tmp_path, test_broker())
    options = ServerOptions()
    options.parseOptions(
        [*before, "notifications", *after, "--config", str(tmp_path / "notifications.toml")]
    )
    return options


@pytest.mark.parametrize(
    ("before", "after", "observer"),
    [
        (("-n",), (), logs.text_log_observer),
        (("--nodaemon", "--logfile=-"), (), logs.text_log_observer),
        (("-n",), ("--json-logs",), logs.json_log_observer),
        (("-n", "--logfile", "daemon.log"), (), None),
        (("-n", "--syslog"), (), None),
        (("-n", "--logger", "twisted.logger.globalLogPublisher"), (), "given"),
        ((), (), None),  # daemonized: twistd's rotating twistd.log
    ],
)
def test_twistd_logs_through_the_text_observer_only_where_it_would_write_the_same(
    tmp_path, before, after, observer
):
    options = _parsed(tmp_path, *before, after=after)
    if observer == "given":
        from twisted.logger import globalLogPublisher

        assert options["logger"] is globalLogPublisher
    else:
        assert options["logger"] is observer


def test_twist_keeps_its_own_text_observer_and_is_asked_for_json():
    class TwistOptions(dict):
        formats: list[str] = []

        def opt_log_format(self, value):  # what use_log_observer recognises twist by
            self.formats.append(value)

    options = TwistOptions(nodaemon=True)
    logs.use_log_observer(options, json_logs=False)
    logs.use_log_observer(None, json_logs=False)
    assert "logger" not in options and options.formats == []
    logs.use_log_observer(options, json_logs=True)
    assert "logger" not in options and options.formats == ["json"]
