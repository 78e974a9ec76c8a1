"""``compare --against REV``: the gateway of another git revision and of this
checkout, measured in alternating rounds."""

from __future__ import annotations

import json
from pathlib import Path

from tests.payloads import github_push

from ..base import ROOT
from ..broker import Broker
from ..load import PUSH_COMMITS
from ..outcome import Outcome, cpu_per_call
from ..servers import check_source, export_version, git
from .runs import alternating_rounds, median_ratio, print_variants


def scenario_compare(options, workdir: Path, broker: Broker, outcome: Outcome) -> None:
    """The gateway of another revision and of this checkout, side by side.

    Figures taken hours apart on a shared machine differ by more than most
    changes: only versions measured in the same minutes, in alternating order,
    compare.
    """
    commit, folder = export_version(options.against, workdir)
    this = f"{git('describe', '--always', '--dirty')} (this checkout)"
    # (label of its runs, name in the table, code)
    versions = [(commit, commit, folder), ("this", this, ROOT)]
    for _, name, source in versions:
        check_source(name, source)
    print(
        f"\n== compare: the gateway of {commit} and of {this}, {options.rounds} round"
        f"{'s' if options.rounds > 1 else ''} in alternating order, at "
        f"{', '.join(map(str, options.connections))} connections, {options.duration:g} s each "
        f"(GitHub push, {len(json.dumps(github_push(PUSH_COMMITS)))} bytes, signed)"
    )
    variants = [(prefix, name, {"source": source}) for prefix, name, source in versions]
    loads = alternating_rounds(options, workdir, broker, outcome, "compare", variants)
    print_variants(
        f"Compared (GitHub push, 7 KB signed; min–max of {options.rounds} runs)",
        [name for _, name, _ in versions],
        loads,
        options.connections,
    )
    for connections in options.connections:
        old, new = loads[commit, connections], loads[this, connections]
        rate = median_ratio(new, old, lambda load: load.rate)
        cpu = median_ratio(new, old, cpu_per_call)
        print(
            f"  {connections} connections: this checkout / {commit}, medians: req/s × {rate:.2f}, "
            f"CPU per call × {cpu:.2f}"
        )
