"""What the kernel says of the processes under load: CPU time (of a process,
its threads, its descendants, the broker, the whole machine), RSS, and a
sampler of the RSS during a run; least-squares growth of the samples."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0])
    return values


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (its threads included)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def broker_pids() -> list[int]:
    """The local RabbitMQ's Erlang VM, for its CPU share (empty when remote)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "beam.smp":
                    pids.append(int(entry.name))
    return pids


def cpu_of(pids: list[int]) -> dict[int, float]:
    """CPU seconds of each of ``pids`` that is still running."""
    seconds = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            seconds[pid] = cpu_seconds(pid)
    return seconds


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two :func:`cpu_of` readings by the processes
    present in both: a short-lived ``beam.smp`` (``rabbitmqctl`` runs one)
    that ended meanwhile must not count as negative time."""
    return sum(after[pid] - before[pid] for pid in before.keys() & after.keys())


def machine_busy_cpu() -> float:
    """CPU seconds spent by the whole machine (every core, idle and I/O wait excluded)."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLK_TCK


def own_cpu() -> float:
    usage = os.times()
    return usage.user + usage.system


def children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``--workers``: the twistd parent and its workers).

    Read from ``/proc/<pid>/task/<tid>/children`` of every thread, recursively.
    """
    found: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        if current in found:
            continue
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    pending.extend(int(c) for c in (task / "children").read_text().split())
    return found


def tree_rss_kb(pid: int, each: dict[int, int] | None = None) -> tuple[int, int]:
    """The summed VmRSS (kB) of a process and its descendants, and how many they are.

    ``each``, when given, keeps the largest VmRSS seen of every process.
    """
    total = count = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, KeyError):
            rss = proc_status(member)["VmRSS"]
            total += rss
            count += 1
            if each is not None:
                each[member] = max(each.get(member, 0), rss)
    return total, count


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of a process, by thread id (the main thread's is ``pid``)."""
    seconds = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (task / "stat").read_text().rpartition(")")[2].split()
                seconds[int(task.name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return seconds


def tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of a process and of each of its descendants, by pid."""
    seconds = {}
    for member in process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            seconds[member] = cpu_seconds(member)
    return seconds


class RSSSampler(threading.Thread):
    """Samples the summed RSS of a process and its descendants every ``interval`` seconds.

    ``samples``: (time, kB); ``processes``: the most processes seen in one sample.
    """

    def __init__(self, pid: int, interval: float):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.processes = 0
        #: The largest VmRSS (kB) of each process, the parent first.
        self.each: dict[int, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            kb, count = tree_rss_kb(self.pid, self.each)
            if count:
                self.samples.append((time.monotonic(), kb))
                self.processes = max(self.processes, count)
            self._halt.wait(self.interval)

    def stop(self) -> list[tuple[float, int]]:
        self._halt.set()
        self.join()
        return self.samples


def rss_growth(samples: list[tuple[float, int]]) -> tuple[float, float]:
    """(MB per second, MB over the span) of a least-squares fit over the second half."""
    if not samples:
        return 0.0, 0.0
    t0 = samples[0][0]
    points = [(t - t0, kb / 1024) for t, kb in samples]
    half = [p for p in points if p[0] >= points[-1][0] / 2]
    per_second = slope(half)
    span = (half[-1][0] - half[0][0]) if len(half) > 1 else 0.0
    return per_second, per_second * span


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var
