"""Where the daemon's time goes: py-spy on its process, and the buckets its
samples are counted in (reactor thread: which part of a call; outbox thread:
which SQL statement, or waiting).

A bucket's rule names the code itself (a module, a package, a class or a
function, imported here), not a string: where the code lives and what its
functions are called is read from the objects when this module is imported.
So a rename in the daemon or in Twisted breaks this module at once (an
ImportError or AttributeError, and ``tests/test_benchmark_profile.py``
fails) instead of silently sending its samples to another bucket.
"""

# ruff: noqa: S603 - it runs py-spy

from __future__ import annotations

import collections
import hmac
import inspect
import json
import json.decoder
import json.encoder
import linecache
import re
import shutil
import subprocess
import sys
import threading
import types
from dataclasses import dataclass
from pathlib import Path

import twisted._threads
import twisted.internet
import twisted.internet.defer
import twisted.internet.threads
import twisted.logger
import twisted.python.log
import twisted.python.logfile
import twisted.python.threadpool
import twisted.web
import txamqp
from twisted.internet import _signals
from twisted.internet.base import ReactorBase
from twisted.internet.epollreactor import EPollReactor
from twisted.web import http

import notifications
import notifications.amqp
import notifications.analyzers
import notifications.dispatcher
import notifications.gatepath
import notifications.gates
import notifications.gates.base
import notifications.gates.github
import notifications.http
import notifications.jsonutil
import notifications.logs
import notifications.metrics
import notifications.notification
import notifications.outbox
import notifications.publisher
import notifications.renderers
import notifications.report
import notifications.web

from .base import BenchError

#: What a rule may name.
Target = types.ModuleType | type | types.FunctionType | types.MethodType


@dataclass(frozen=True)
class Place:
    """Where a rule's code is, as py-spy names it (``--full-filenames``).

    ``path``: the end of a file's path (``/twisted/web/http.py``) or a
    package's folder (``/twisted/web/``, matched anywhere in the path), taken
    from the module's dotted name so that it holds whatever folder the code
    is installed in (a virtual environment, another revision's checkout);
    ``names``: the functions it covers, ``None`` for every one.
    """

    path: str
    names: frozenset[str] | None = None

    def matches(self, function: str, filename: str) -> bool:
        """Whether a frame (py-spy's function name and file) is this place's code."""
        where = self.path in filename if self.path.endswith("/") else filename.endswith(self.path)
        # py-spy writes a method as Class.method: the function's own name is the last part.
        return where and (self.names is None or function.rpartition(".")[2] in self.names)


def _module_path(module: types.ModuleType, folder: bool = True) -> str:
    """``/twisted/web/`` for a package (``folder``: its folder, else its
    ``__init__.py``), ``/twisted/web/http.py`` for a module."""
    dotted = "/" + module.__name__.replace(".", "/")
    file = Path(module.__file__ or "")
    if file.name == "__init__.py":
        return dotted + "/" if folder else dotted + "/__init__.py"
    return dotted + file.suffix


def _functions(target: types.FunctionType | types.MethodType | type) -> list[types.CodeType]:
    """The code of a function, or of the methods a class defines itself."""
    if not isinstance(target, type):
        return [inspect.unwrap(target).__code__]
    members = [inspect.unwrap(member) for member in vars(target).values()]
    return [member.__code__ for member in members if inspect.isfunction(member)]


def place(target: Target) -> Place:
    """The place of a module or package (every function in it), of a class (its
    methods, by name, in its module's file) or of a function or method."""
    if isinstance(target, types.ModuleType):
        return Place(_module_path(target))
    path = _module_path(sys.modules[target.__module__], folder=False)
    codes = _functions(target)
    if not codes:
        raise TypeError(f"{target.__qualname__} defines no method of its own")
    for code in codes:
        if not code.co_filename.endswith(path):
            # Defined elsewhere than its module says: py-spy would name that other file.
            raise TypeError(f"{target.__qualname__}: {code.co_filename} is not …{path}")
    return Place(path, frozenset(code.co_name for code in codes))


#: Buckets of the reactor thread's profile. Each sample goes to the bucket of
#: the innermost frame that a rule names (its "self time"; frames that no rule
#: names, like the standard library's helpers, are transparent). The first
#: matching rule of a frame wins: a function before its module, a module
#: before its package.
PROFILE_RULES: list[tuple[str, Target]] = [
    ("idle (waiting in epoll)", EPollReactor.doPoll),
    ("HMAC (signature check)", hmac),
    ("HMAC (signature check)", notifications.gates.github.signature_matches),
    ("JSON parsing", json.decoder),
    ("JSON parsing", json.loads),
    ("JSON parsing", notifications.gates.base.parse_json_object),
    ("JSON depth check (_depth_checked)", notifications.gates.base._depth_checked),
    ("JSON encoding (notification, report)", json.encoder),
    ("JSON encoding (notification, report)", json.dumps),
    ("JSON encoding (notification, report)", notifications.jsonutil),
    ("rendering (text, link, group)", notifications.renderers),
    ("rendering (text, link, group)", notifications.analyzers),
    ("gate logic (headers, checks, routing key, report)", notifications.gates),
    ("gate logic (headers, checks, routing key, report)", notifications.notification),
    ("gate logic (headers, checks, routing key, report)", notifications.report),
    ("reactor and sockets", twisted.python.log.callWithLogger),
    ("reactor and sockets", twisted.python.log.callWithContext),
    ("logging (the call line)", twisted.logger),
    ("logging (the call line)", twisted.python.log),
    ("logging (the call line)", twisted.python.logfile),
    ("logging (the call line)", notifications.logs),
    ("logging (the call line)", notifications.web.CallHandler._log_call),
    ("logging (the call line)", notifications.web._summary),
    ("logging (the call line)", notifications.web.redacted_log_formatter),
    ("logging (the call line)", http.combinedLogFormatter),
    ("logging (the call line)", http.HTTPFactory.log),
    ("logging (the call line)", http._escape),
    ("thread hand-off (outbox pool)", twisted.python.threadpool),
    ("thread hand-off (outbox pool)", twisted._threads),
    ("thread hand-off (outbox pool)", twisted.internet.threads),
    ("thread hand-off (outbox pool)", ReactorBase.callFromThread),
    ("thread hand-off (outbox pool)", ReactorBase.wakeUp),
    # The reactor's wakers: written to by callFromThread, read by the reactor.
    ("thread hand-off (outbox pool)", _signals._FDWaker),
    ("thread hand-off (outbox pool)", _signals._UnixWaker),
    ("outbox + dispatcher (reactor side)", notifications.outbox),
    ("outbox + dispatcher (reactor side)", notifications.dispatcher),
    ("AMQP framing (txamqp, publisher)", txamqp),
    ("AMQP framing (txamqp, publisher)", notifications.amqp),
    ("AMQP framing (txamqp, publisher)", notifications.publisher),
    ("metrics", notifications.metrics),
    ("twisted.web request handling", twisted.web),
    ("twisted.web request handling", notifications.web),
    ("twisted.web request handling", notifications.http),
    ("short HTTP path (gatepath, httptools)", notifications.gatepath),
    ("Deferred machinery", twisted.internet.defer),
    ("reactor and sockets", twisted.internet),
]

#: The rules with their places, resolved once, when this module is imported.
PLACES: list[tuple[str, Place]] = [(bucket, place(target)) for bucket, target in PROFILE_RULES]

#: The daemon's own code: a frame there that no rule names gets a bucket of its module.
DAEMON = place(notifications)

#: The outbox thread waiting for work (a thread pool's queue), and the outbox's statements.
WAITING = Place(
    place(threading.Condition.wait).path,
    place(threading.Condition.wait).names | place(threading.Event.wait).names,
)
OUTBOX = place(notifications.outbox)


def _rule(function: str, filename: str) -> str | None:
    for bucket, where in PLACES:
        if where.matches(function, filename):
            return bucket
    if DAEMON.matches(function, filename):
        return DAEMON.path.lstrip("/") + filename.rpartition(DAEMON.path)[2]
    return None


def classify(frames: list[tuple[str, str, int]]) -> str:
    """The bucket of one reactor-thread stack (outermost frame first)."""
    for function, filename, _ in reversed(frames):
        bucket = _rule(function, filename)
        if bucket is not None:
            return bucket
    return "other"


def classify_outbox(frames: list[tuple[str, str, int]]) -> str:
    """The bucket of one outbox-thread stack: waiting, or which SQL statement."""
    for function, filename, line in reversed(frames):
        if WAITING.matches(function, filename):
            return "idle (waiting for work)"
        if OUTBOX.matches(function, filename):
            # The statement is on the frame's line or the next two (a call
            # spread over lines), or the closure is named after it.
            source = " ".join(linecache.getline(filename, n) for n in range(line, line + 3))
            source += " " + function.upper()
            for word, bucket in (
                ("COMMIT", "COMMIT (WAL write and fsync)"),
                ("BEGIN", "BEGIN IMMEDIATE"),
                ("SAVEPOINT", "savepoints"),
                ("RELEASE", "savepoints"),
                ("INSERT", "INSERT (outbox, deliveries)"),
                ("DELETE", "DELETE (confirmed)"),
                ("SELECT", "SELECT (dedup, page-in, oldest)"),
            ):
                if word in source:
                    return bucket
    return "other (Python around the statements)"


_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?):(?P<line>\d+)\)$")


def summarize_profile(path: Path) -> dict:
    """Percentages per bucket of py-spy's raw (collapsed) output, per thread."""
    threads: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in path.read_text(errors="replace").splitlines():
        stack, _, count = row.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        parts = stack.split(";")
        # "thread (31831): MainThread", "thread (31836): PoolThread-outbox-0"
        name = parts[0].partition(": ")[2]
        frames = []
        for part in parts[1:]:
            match = _FRAME.match(part)
            if match:
                frames.append((match["function"], match["file"], int(match["line"])))
        if name == "MainThread":
            threads["reactor thread"][classify(frames)] += int(count)
        elif "outbox" in name:
            threads["outbox thread"][classify_outbox(frames)] += int(count)
    summary = {}
    for thread, buckets in threads.items():
        total = sum(buckets.values())
        summary[thread] = {
            "samples": total,
            "buckets": {
                bucket: round(100 * count / total, 1) for bucket, count in buckets.most_common()
            },
        }
    return summary


def py_spy_command(options) -> str:
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    found = shutil.which("py-spy")
    if not found:
        raise BenchError("--profile needs py-spy: pip install py-spy")
    return found


def start_profiler(options, pid: int, seconds: int, output: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            py_spy_command(options),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            str(options.profile_rate),
            "--nonblocking",
            "--threads",
            *(["--gil"] if options.profile_gil else ["--idle"]),
            "--full-filenames",
            "--format",
            "raw",
            "--output",
            str(output),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def print_profile(
    summary: dict, seconds: float, rate: int, calls_per_s: float, gil: bool = False
) -> None:
    mode = "--gil: only the thread holding the GIL is sampled" if gil else "--idle"
    print(
        f"\nProfile (py-spy record --nonblocking {mode}, {rate} Hz asked, {seconds:.0f} s, "
        f"{calls_per_s:.0f} calls/s): share of each thread's samples"
        + ("" if gil else ", and the wall time per call")
    )
    if gil:
        calls_per_s = 0.0  # samples are not spread over the wall time: no time per call
    for thread in ("reactor thread", "outbox thread"):
        data = summary.get(thread)
        if not data:
            continue
        print(f"  {thread} ({data['samples']} samples, {data['samples'] / seconds:.0f} Hz got):")
        busy = {b: p for b, p in data["buckets"].items() if not b.startswith("idle")}
        busy_total = sum(busy.values())
        for bucket, percent in data["buckets"].items():
            of_busy = f"{100 * percent / busy_total:5.1f}% of busy" if bucket in busy else ""
            per_call = f"{1e6 * percent / 100 / calls_per_s:6.0f} µs/call" if calls_per_s else ""
            print(f"    {percent:5.1f}%  {of_busy:>15}  {per_call:>12}  {bucket}")
        data["us_per_call"] = {
            bucket: round(1e6 * percent / 100 / calls_per_s, 1) if calls_per_s else None
            for bucket, percent in data["buckets"].items()
        }
