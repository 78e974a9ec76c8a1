"""``archive``: the gateway with the archive stream on and off, in alternating rounds.

With the archive on, the broker appends every notification to a stream queue
as well (one more queue to route to, written to disk); the daemon itself does
nothing more per call. The target: calls/s with the archive on within 10 % of
off, measured side by side.
"""

from __future__ import annotations

from pathlib import Path

from ..broker import Broker
from ..outcome import Outcome
from .runs import median_ratio, variants_side_by_side

#: The largest drop of calls/s the archive may cost (the target).
TOLERANCE = 0.10


def scenario_archive(options, workdir: Path, broker: Broker, outcome: Outcome) -> None:
    """The gateway with ``[archive] enabled = false`` then ``true`` (ABBA order)."""
    variants = [
        ("archive-off", "archive-off", {"archive": False}),
        ("archive-on", "archive-on", {"archive": True}),
    ]
    loads = variants_side_by_side(
        options,
        workdir,
        broker,
        outcome,
        "archive",
        "the gateway with the archive off and on",
        "Archive off and on",
        variants,
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
