"""The benchmark script runs: ``python benchmarks/run.py --smoke`` (tiny counts).

No timing is asserted here (timings are noisy): only that the four scenarios
(throughput with the bare and default twisted.web servers, the FastAPI
receiver, the gateway and a 2-worker run; outage, overload, memory) run to
the end, print their tables and targets, that every call answered 2xx by the
FastAPI receiver and by the gateway was counted in the queue, and that the
overload run's refusals were all 503 with Retry-After; that ``compare``
runs another revision's daemon from git beside this checkout's; and that
``archive`` runs the gateway with the archive off and on, in turn.

The FastAPI receiver runs in a virtual environment of its own, made once per
machine (about 20 s, from PyPI) in ``~/.cache/notifications-benchmarks/``
and reused by every later run.
They need RabbitMQ and ``wrk``: on CI (``CI=true``) either missing is a
failure; elsewhere a missing ``wrk`` skips the test.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import unavailable

RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
BROKER_HOST = os.environ.get("BROKER_HOST", "127.0.0.1")
BROKER_PORT = int(os.environ.get("BROKER_PORT", "5672"))


def _broker_answers() -> bool:
    try:
        with socket.create_connection((BROKER_HOST, BROKER_PORT), timeout=2):
            return True
    except OSError:
        return False


def _run(*arguments: str) -> str:
    if shutil.which("wrk") is None:
        unavailable("wrk is not installed (apt-get install wrk)")
    if not _broker_answers():
        # Like every broker test of the suite: no broker is a failure, never a skip.
        pytest.fail(f"RabbitMQ is not answering on {BROKER_HOST}:{BROKER_PORT}", pytrace=False)
    done = subprocess.run(
        [sys.executable, str(RUN), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=RUN.parent.parent,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_benchmark_smoke():
    output = _run("--smoke")
    for title in (
        "Throughput (GitHub push",
        "Outage (broker cut",
        "Overload (max_in_progress 16",
        "Memory (small Notification",
    ):
        assert title in output, output
    assert "req/s" in output and "p99 ms" in output and "peak RSS MB" in output, output
    assert "2 workers / 1 worker = " in output, output
    assert "Compared (GitHub push" in output, output
    for server in ("bare twisted.web", "default twisted.web", "FastAPI receiver"):
        for connections in (16, 64):
            assert re.search(rf"^{server} +{connections} ", output, re.MULTILINE), output
    for target in (
        "gateway >= 1.5x the FastAPI receiver at 16 connections",
        "gateway >= 1.5x the FastAPI receiver at 64 connections",
        "gateway >= 0.5x the default twisted.web at 16 connections",
        "gateway p99 < 20 ms at 16 connections (1 worker)",
    ):
        assert re.search(rf"^  (MET    |NOT MET) {re.escape(target)}", output, re.MULTILINE), output
    assert "acc. p99" in output, output
    for scenario in (
        "fastapi-16",
        "fastapi-64",
        "gateway-16",
        "gateway-64",
        "gateway-2w-16",
        "outage",
        "overload-limit",
        "overload",
        "memory",
    ):
        assert f"OK   {scenario}: messages in the queue = 2xx answers" in output, output
    for scenario in ("bare-16", "bare-64", "default-16", "default-64"):
        assert f"OK   {scenario}: every call answered" in output, output
    assert "OK   overload: every non-2xx is a 503 with Retry-After" in output, output
    assert "MISMATCH" not in output, output
    assert "result: PASS" in output, output


def test_benchmark_compare_smoke():
    """Two rounds against HEAD: each version's own code, in alternating order, counted."""
    commit = subprocess.run(
        ["git", "-C", str(RUN.parent), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    output = _run("compare", "--against", "HEAD", "--smoke", "--connections", "4", "--rounds", "2")
    exported = re.search(rf"^  {commit}: (\S+)$", output, re.MULTILINE)
    assert exported is not None, output
    assert f"version-{commit}" in exported.group(1), output
    runs = re.findall(r"^  (\S+)-4-round(\d): \d+ req/s", output, re.MULTILINE)
    # Round 1: the other revision first; round 2: this checkout first.
    assert runs == [(commit, "1"), ("this", "1"), ("this", "2"), (commit, "2")], output
    assert "Compared (GitHub push" in output and "CPU µs/call" in output, output
    assert re.search(r"4 connections: .* medians: req/s × [0-9.]+, CPU per call", output), output
    assert output.count(": messages in the queue = 2xx answers") == 4, output
    assert "FAIL" not in output.replace("result: PASS", ""), output
    assert "result: PASS" in output, output


def test_benchmark_archive_smoke():
    """Two rounds, the archive off and on in alternating order, every call counted."""
    output = _run("archive", "--smoke", "--connections", "4", "--rounds", "2")
    runs = re.findall(r"^  archive-(on|off)-4-round(\d): \d+ req/s", output, re.MULTILINE)
    assert runs == [("off", "1"), ("on", "1"), ("on", "2"), ("off", "2")], output
    assert "Archive off and on (GitHub push" in output, output
    assert re.search(r"4 connections: median req/s on / off = [0-9.]+", output), output
    assert re.search(r"(MET|NOT MET) +archive on within 10% of off, 4 connections", output), output
    assert output.count(": messages in the queue = 2xx answers") == 4, output
    assert "result: PASS" in output, output
