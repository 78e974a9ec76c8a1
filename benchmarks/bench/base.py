"""What every part of the benchmarks uses: paths, the error that stops a run,
free ports, plain HTTP probes and polling."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

#: The ``benchmarks`` folder, and the checkout it belongs to.
BENCHMARKS = Path(__file__).resolve().parent.parent
ROOT = BENCHMARKS.parent
LUA = BENCHMARKS / "gate.lua"
BARE = BENCHMARKS / "bare.py"
DEFAULT = BENCHMARKS / "twisted_default.py"
FASTAPI = BENCHMARKS / "fastapi_receiver.py"
FASTAPI_REQUIREMENTS = BENCHMARKS / "fastapi-requirements.txt"
#: The GitHub door of the generated configuration (a secret the script knows).
GITHUB_DOOR = "Acme"

T = TypeVar("T")


class BenchError(Exception):
    """The benchmark could not run (no wrk, no broker, the daemon did not start…)."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """``GET path`` on 127.0.0.1:``port``: (status, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Call ``predicate`` until it returns something true; BenchError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, http.client.HTTPException, ValueError) as error:
            last_error = error
        time.sleep(interval)
    raise BenchError(f"timed out after {timeout:.0f} s waiting for {what} ({last_error})")
