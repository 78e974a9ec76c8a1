"""The benchmark script runs: ``python benchmarks/run.py --smoke`` (tiny counts).

No timing is asserted here (timings are noisy): only that the four scenarios
(throughput with a 2-worker run, outage, overload, memory) run to the end,
print their tables, that every call answered 2xx was counted in the queue,
and that the overload run's refusals were all 503 with Retry-After. It needs
RabbitMQ and ``wrk``: on CI (``CI=true``) either missing is a failure;
elsewhere a missing ``wrk`` skips the test.
"""

from __future__ import annotations

import os
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


def test_benchmark_smoke():
    if shutil.which("wrk") is None:
        unavailable("wrk is not installed (apt-get install wrk)")
    if not _broker_answers():
        # Like every broker test of the suite: no broker is a failure, never a skip.
        pytest.fail(f"RabbitMQ is not answering on {BROKER_HOST}:{BROKER_PORT}", pytrace=False)
    done = subprocess.run(
        [sys.executable, str(RUN), "--smoke"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=RUN.parent.parent,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    for title in (
        "Throughput (GitHub push",
        "Outage (broker cut",
        "Overload (max_in_progress 16",
        "Memory (small Notification",
    ):
        assert title in output, output
    assert "req/s" in output and "p99 ms" in output and "peak RSS MB" in output, output
    assert "2 workers / 1 worker = " in output, output
    assert "acc. p99" in output, output
    for scenario in (
        "gateway-16",
        "gateway-64",
        "gateway-2w-16",
        "outage",
        "overload-limit",
        "overload",
        "memory",
    ):
        assert f"OK   {scenario}: messages in the queue = 2xx answers" in output, output
    assert "OK   overload: every non-2xx is a 503 with Retry-After" in output, output
    assert "MISMATCH" not in output, output
    assert "result: PASS" in output, output
