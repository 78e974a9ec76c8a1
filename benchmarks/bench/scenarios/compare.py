"""``compare --against REV``: the gateway of another git revision and of this
checkout, measured in alternating rounds."""

from __future__ import annotations

from pathlib import Path

from ..base import ROOT
from ..broker import Broker
from ..outcome import Outcome, cpu_per_call
from ..servers import check_source, export_version, git
from .runs import median_ratio, variants_side_by_side


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
    variants = [(prefix, name, {"source": source}) for prefix, name, source in versions]
    loads = variants_side_by_side(
        options,
        workdir,
        broker,
        outcome,
        "compare",
        f"the gateway of {commit} and of {this}",
        "Compared",
        variants,
    )
    for connections in options.connections:
        old, new = loads[commit, connections], loads[this, connections]
        rate = median_ratio(new, old, lambda load: load.rate)
        cpu = median_ratio(new, old, cpu_per_call)
        print(
            f"  {connections} connections: this checkout / {commit}, medians: req/s × {rate:.2f}, "
            f"CPU per call × {cpu:.2f}"
        )
