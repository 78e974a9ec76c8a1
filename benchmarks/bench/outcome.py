"""What a command found: the rows of figures, the checks (a failed one fails
the run), the targets (printed MET / NOT MET, never asserted), and the tables."""

from __future__ import annotations

from dataclasses import dataclass, field

from .load import Load


@dataclass
class Outcome:
    """Results of the whole command: rows, checks, targets."""

    rows: list[dict] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    targets: list[tuple[str, bool, str]] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)


def cpu_per_call(load: Load) -> float:
    """The server's CPU time per answered call (µs): steadier from run to run
    than the request rate, which moves with whatever else the cores do."""
    return load.server_cpu / 100 * 1e6 / load.rate if load.rate else 0.0


def ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def print_table(
    title: str,
    loads: list[Load],
    counts: dict[str, tuple[int, str]],
    ratios,
    worker_ratios: dict[str, float] | None = None,
) -> None:
    """One row per run; ``ratios``: gateway/bare, ``worker_ratios``: N workers / 1 worker."""
    worker_ratios = worker_ratios or {}
    print(f"\n{title}")
    header = (
        f"{'server':<9} {'wk':>2} {'conns':>5} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'non-2xx':>7} {'errors':>6} {'peak RSS MB':>11} "
        f"{'CPU% srv/wrk/mq/other':>21} {'CPU µs/call':>11} {'2xx':>8} {'in queue':>8} "
        f"{'count':>8} {'/bare':>6}" + (f" {'/1 wk':>6}" if worker_ratios else "")
    )
    print(header)
    print("-" * len(header))
    for load in loads:
        count, verdict = counts.get(load.label, (None, "-"))
        ratio = ratios.get(load.label)
        cpu = f"{load.server_cpu:.0f}/{load.wrk_cpu:.0f}/{load.broker_cpu:.0f}/{load.other_cpu:.0f}"
        workers = "-" if load.server in ("bare", "default") else str(load.workers)
        by_workers = worker_ratios.get(load.label)
        per_call = cpu_per_call(load)
        print(
            f"{load.server:<9} {workers:>2} {load.connections:>5} {load.rate:>8.0f} "
            f"{ms(load.latency_ms['p50']):>7} {ms(load.latency_ms['p99']):>7} "
            f"{ms(load.latency_ms['max']):>7} {load.non2xx:>7} {load.errors:>6} "
            f"{load.rss_peak_mb:>11.1f} {cpu:>21} {per_call:>11.0f} "
            f"{load.ok2xx + load.warmup_2xx:>8} "
            f"{'-' if count is None else count:>8} {verdict:>8} "
            f"{'-' if ratio is None else f'{ratio:.2f}':>6}"
            + (f" {'-' if by_workers is None else f'{by_workers:.2f}':>6}" if worker_ratios else "")
        )
    if loads:
        print(
            "(req/s, latencies, CPU: the measured run; 2xx: the measured run and its warm-up, "
            "both counted in the queue; wk: daemon processes taking calls (--workers); peak "
            "RSS: the largest sum of VmRSS over the server's processes (the twistd parent and "
            "its workers), sampled, or VmHWM for one process; CPU srv: every server process; "
            "other: the rest of the machine, this script included; CPU µs/call: CPU srv over "
            "req/s)"
        )


def load_checks(outcome: Outcome, load: Load, name: str, expect_refusals: bool = False) -> None:
    outcome.check(
        f"{name}: every call answered",
        load.complete and load.errors == 0,
        f"sent {load.sent}, answered {load.answered}, socket errors {load.errors}"
        + ("" if load.complete else " (wrk stopped before every answer came)"),
    )
    if expect_refusals:
        outcome.check(
            f"{name}: every non-2xx is a 503 with Retry-After",
            load.non2xx == load.s503 == load.s503_retry,
            f"{load.non2xx} non-2xx, {load.s503} 503, {load.s503_retry} with Retry-After",
        )
    else:
        outcome.check(f"{name}: no non-2xx answer", load.non2xx == 0, f"{load.non2xx} non-2xx")


def count_check(outcome: Outcome, name: str, in_queue: int, answered_2xx: int) -> str:
    verdict = "OK" if in_queue == answered_2xx else "MISMATCH"
    outcome.check(
        f"{name}: messages in the queue = 2xx answers",
        verdict == "OK",
        f"{in_queue} in the queue, {answered_2xx} answered 2xx",
    )
    return verdict
