"""``archive``: the gateway with the archive stream on and off, in alternating rounds.

With the archive on, the broker appends every notification to a stream queue
as well (one more queue to route to, written to disk); the daemon itself does
nothing more per call. The target: calls/s with the archive on within 10 % of
off, measured side by side.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.payloads import github_push

from ..broker import Broker
from ..load import PUSH_COMMITS
from ..outcome import Outcome
from .runs import alternating_rounds, median_ratio, print_variants

#: The largest drop of calls/s the archive may cost (the target).
TOLERANCE = 0.10


def scenario_archive(options, workdir: Path, broker: Broker, outcome: Outcome) -> None:
    """The gateway with ``[archive] enabled = false`` then ``true`` (ABBA order)."""
    print(
        f"\n== archive: the gateway with the archive off and on, {options.rounds} round"
        f"{'s' if options.rounds > 1 else ''} in alternating order, at "
        f"{', '.join(map(str, options.connections))} connections, {options.duration:g} s each "
        f"(GitHub push, {len(json.dumps(github_push(PUSH_COMMITS)))} bytes, signed)"
    )
    variants = [
        ("archive-off", "archive-off", {"archive": False}),
        ("archive-on", "archive-on", {"archive": True}),
    ]
    loads = alternating_rounds(options, workdir, broker, outcome, "archive", variants)
    print_variants(
        f"Archive off and on (GitHub push, 7 KB signed; min–max of {options.rounds} runs)",
        [name for _, name, _ in variants],
        loads,
        options.connections,
    )
    for connections in options.connections:
        on, off = loads["archive-on", connections], loads["archive-off", connections]
        ratio = median_ratio(on, off, lambda load: load.rate)
        detail = f"median req/s on / off = {ratio:.2f}"
        print(f"  {connections} connections: {detail}")
        outcome.targets.append(
            (
                f"archive on within {TOLERANCE:.0%} of off, {connections} connections",
                ratio >= 1 - TOLERANCE,
                detail,
            )
        )
