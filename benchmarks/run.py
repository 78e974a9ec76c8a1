"""Benchmarks of the notifications center: throughput, broker outage, overload, memory.

Every scenario starts the real daemon (``twistd notifications``) on a copy of
``etc/`` pointed at the local RabbitMQ (publisher confirms on), drives it with
``wrk`` and ``benchmarks/gate.lua``, and checks that every call answered 2xx
reached a queue bound to the exchange. The throughput scenario measures,
beside it and in alternating rounds, a bare twisted.web server, twisted.web
with its defaults, and a FastAPI receiver (uvicorn, aio-pika with publisher
confirms, in a virtual environment of its own). See benchmarks/README.rst.

This file is the command only; the parts live in the ``bench`` package
beside it (``benchmarks/bench/``), one job per module.

    python benchmarks/run.py                 # throughput: bare, default, FastAPI, gateway
    python benchmarks/run.py --workers 2     # the same, and the gateway with 2 worker processes
    python benchmarks/run.py outage          # the broker cut for the middle third of the run
    python benchmarks/run.py overload        # max_in_progress 16, then 4x as many connections
    python benchmarks/run.py memory          # 1,000,000 small Notification calls, RSS sampled
    python benchmarks/run.py all --profile   # the four, with py-spy during the 16-connection run
    python benchmarks/run.py compare --against 9c9f5c2   # that version and this one, alternated
    python benchmarks/run.py --smoke         # the four, tiny (what the test suite runs)

Exit status: 0 when every check passed, 1 when a count did not match or a
call was refused, dropped or unanswered (past the overload scenario's
limit, a 503 with Retry-After is expected), 2 when the benchmark could not
run. The performance targets are printed (MET / NOT MET),
never turned into a failure: timings are noisy.
"""

import sys
from pathlib import Path

# The checkout first: the benchmarks are ``benchmarks.bench``, and the
# daemon's package and the test payloads are imported from here.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
