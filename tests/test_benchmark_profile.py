"""The benchmark's profile buckets (``benchmarks/bench/profiling.py``), no daemon needed.

Each rule names the code it covers (a module, a package, a class, a function)
and its place (the end of a file's path and the function names that py-spy
will print) is read from that code: these tests check that every rule
resolved to a place where its code really is, and that py-spy stacks made of
the real files and functions of the daemon and of Twisted land in the
buckets the README's profile tables use.
"""

from __future__ import annotations

import inspect
import threading
import types
from pathlib import Path

import pytest
from twisted.internet.epollreactor import EPollReactor
from twisted.web import http, server

from benchmarks.bench import profiling
from benchmarks.bench.profiling import (
    PLACES,
    PROFILE_RULES,
    classify,
    classify_outbox,
    place,
    summarize_profile,
)
from notifications import outbox, web
from notifications.gates import base


def _files(target) -> list[str]:
    """The real file(s) of a rule's code."""
    if isinstance(target, types.ModuleType):
        return [str(Path(target.__file__))]
    if isinstance(target, type):
        members = [inspect.unwrap(member) for member in vars(target).values()]
        return [m.__code__.co_filename for m in members if inspect.isfunction(m)]
    return [inspect.unwrap(target).__code__.co_filename]


def _frame(function) -> tuple[str, str, int]:
    """A py-spy frame (qualified name, file, line) of a real function."""
    code = inspect.unwrap(function).__code__
    return function.__qualname__, code.co_filename, code.co_firstlineno


def test_every_rule_resolves_to_where_its_code_is():
    assert len(PLACES) == len(PROFILE_RULES) > 0
    for (bucket, target), (same_bucket, where) in zip(PROFILE_RULES, PLACES, strict=True):
        assert bucket == same_bucket
        files = _files(target)
        assert files, (bucket, target)
        for file in files:
            if where.path.endswith("/"):
                assert where.path in file, (bucket, where, file)
            else:
                assert file.endswith(where.path), (bucket, where, file)
        if isinstance(target, types.ModuleType):
            assert where.names is None, (bucket, target)
        else:
            assert where.names, (bucket, target)
            for name in where.names:
                assert where.matches(name, files[0]), (bucket, where, name)


def test_every_bucket_of_the_readme_has_a_rule():
    buckets = {bucket for bucket, _ in PROFILE_RULES}
    assert buckets == {
        "idle (waiting in epoll)",
        "HMAC (signature check)",
        "JSON parsing",
        "JSON depth check (_depth_checked)",
        "JSON encoding (notification, report)",
        "rendering (text, link, group)",
        "gate logic (headers, checks, routing key, report)",
        "reactor and sockets",
        "logging (the call line)",
        "thread hand-off (outbox pool)",
        "outbox + dispatcher (reactor side)",
        "AMQP framing (txamqp, publisher)",
        "metrics",
        "twisted.web request handling",
        "short HTTP path (gatepath, httptools)",
        "Deferred machinery",
    }


def test_a_rename_fails_loudly():
    """A name that does not exist is an AttributeError when the rules are
    built, not a rule that silently matches nothing."""
    with pytest.raises(AttributeError):
        place(web.CallHandler._no_such_method)  # type: ignore[attr-defined]


def test_a_function_defined_elsewhere_than_its_module_says_is_refused():
    def helper():
        pass

    helper.__module__ = "notifications.web"
    with pytest.raises(TypeError, match="is not"):
        place(helper)


@pytest.mark.parametrize(
    ("innermost", "bucket"),
    [
        (base._depth_checked, "JSON depth check (_depth_checked)"),
        (base.parse_json_object, "JSON parsing"),
        (web.CallHandler._log_call, "logging (the call line)"),
        (web.CallHandler.handle, "twisted.web request handling"),
        (http.combinedLogFormatter, "logging (the call line)"),
        (http.HTTPFactory.log, "logging (the call line)"),
        (server.Request.process, "twisted.web request handling"),
        (EPollReactor.doPoll, "idle (waiting in epoll)"),
        (outbox.Outbox.__init__, "outbox + dispatcher (reactor side)"),
    ],
)
def test_a_stack_goes_to_the_bucket_of_its_innermost_named_frame(innermost, bucket):
    outer = [_frame(EPollReactor.doIteration), _frame(server.Request.process)]
    # A standard library helper that no rule names is transparent.
    helper = ("OrderedDict.get", "/usr/lib/python3.11/collections/__init__.py", 1)
    assert classify([*outer, _frame(innermost), helper]) == bucket


def test_a_method_is_told_from_another_with_the_same_file():
    """Rules name functions, not only files: ``HTTPFactory.log`` is logging,
    the rest of ``twisted/web/http.py`` is request handling."""
    assert classify([_frame(http.HTTPFactory.log)]) == "logging (the call line)"
    assert classify([_frame(http.HTTPChannel.dataReceived)]) == "twisted.web request handling"


def test_daemon_code_no_rule_names_is_bucketed_by_module():
    file = str(Path(web.__file__).with_name("brand_new_module.py"))
    assert classify([("anything", file, 1)]) == "notifications/brand_new_module.py"
    assert classify([("anything", "/elsewhere/module.py", 1)]) == "other"


def test_outbox_thread_waiting_and_statements():
    waiting = _frame(threading.Condition.wait)
    assert classify_outbox([waiting]) == "idle (waiting for work)"
    commit = ("commit", outbox.__file__, 1)
    assert classify_outbox([commit]) == "COMMIT (WAL write and fsync)"
    assert classify_outbox([("other", "/elsewhere.py", 1)]) == (
        "other (Python around the statements)"
    )


def test_summarize_a_py_spy_raw_profile(tmp_path):
    def stack(*functions) -> str:
        return ";".join(f"{name} ({file}:{line})" for name, file, line in map(_frame, functions))

    raw = tmp_path / "profile.raw.txt"
    raw.write_text(
        f"thread (1): MainThread;{stack(EPollReactor.doIteration, EPollReactor.doPoll)} 3\n"
        f"thread (1): MainThread;{stack(server.Request.process, base._depth_checked)} 1\n"
        f"thread (2): PoolThread-outbox-0;{stack(threading.Condition.wait)} 4\n"
    )
    summary = summarize_profile(raw)
    assert summary["reactor thread"] == {
        "samples": 4,
        "buckets": {"idle (waiting in epoll)": 75.0, "JSON depth check (_depth_checked)": 25.0},
    }
    assert summary["outbox thread"] == {
        "samples": 4,
        "buckets": {"idle (waiting for work)": 100.0},
    }
    assert profiling.DAEMON.path == "/notifications/"
