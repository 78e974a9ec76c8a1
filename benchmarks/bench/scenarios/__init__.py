"""The scenarios of ``run.py``: each takes ``(options, workdir, broker, outcome)``,
runs its servers and loads, and adds its rows, checks and targets to ``outcome``."""

from __future__ import annotations

from .archive import scenario_archive
from .compare import scenario_compare
from .memory import scenario_memory
from .outage import scenario_outage
from .overload import scenario_overload
from .throughput import scenario_throughput

#: By name, as the command line gives them; ``all`` runs the first four.
SCENARIOS = {
    "throughput": scenario_throughput,
    "outage": scenario_outage,
    "overload": scenario_overload,
    "memory": scenario_memory,
    "compare": scenario_compare,
    "archive": scenario_archive,
}
