"""The parts of ``benchmarks/run.py``, one job per module.

- ``base``: paths, the error that stops a run, ports and polling;
- ``process``: what the kernel says of a process (CPU, RSS, threads) and samplers;
- ``broker``: the script's own reactor thread, the count queue, the outage proxy;
- ``servers``: the servers under load (the daemon, the bare and default
  twisted.web servers, the FastAPI receiver), their configuration and health;
- ``load``: the requests and the wrk runs (``gate.lua``);
- ``profiling``: py-spy and the buckets its samples go to;
- ``outcome``: checks, targets and tables;
- ``scenarios``: throughput, compare, outage, overload, memory;
- ``cli``: the command line (``python benchmarks/run.py``, ``python -m benchmarks.bench``).
"""
