"""Private RabbitMQ nodes and clusters, for the tests and for ``make run``.

Debian's ``rabbitmq-server`` package is used as it is installed: its own
scripts in ``/usr/lib/rabbitmq/bin`` (not the wrappers on the PATH, which
switch to the ``rabbitmq`` user, its HOME and the system node's cookie when
run as root). Every private node has its own everything, so that it can
never reach, nor be mistaken for, the system node on 5672:

- an empty ``rabbitmq-env.conf`` (the package's sets the system node's name),
  its own ``rabbitmq.conf`` (one loopback AMQP listener), ``advanced.config``
  (the port range of stream replication), an empty plugins file;
- its own node name (``notif-<purpose>-<base port>-<n>@localhost``), AMQP
  port, distribution port, data, log and pid file under its folder;
- a HOME with an ``.erlang.cookie`` of its own (random, mode 400), for the
  node and for every ``rabbitmqctl`` call;
- an environment built from scratch: nothing inherited but ``PATH`` (and
  ``TMPDIR``, ``TZ``), so no ``RABBITMQ_*``/``ERL_*`` variable of the caller
  leaks in, nor ``NOTIFY_SOCKET``.

Ports come in blocks of 100 (:class:`PortBlock`) below the kernel's
ephemeral range, never one the system node uses; a block is taken with an
exclusive lock file in ``/tmp``, held while its nodes run, so that parallel
test sessions on one machine each get their own.

API (everything blocks; from a test running in the reactor, call it through
``twisted.internet.threads.deferToThread``):

``Node(name, amqp_port, dist_port, base_dir, ctl_ports=…, stream_ports=…, home=…)``
    one node: ``start()``, ``wait_ready(timeout)``, ``stop()`` (``rabbitmqctl
    stop``, then SIGTERM, then SIGKILL, by pid), ``kill()`` (SIGKILL of
    ``beam.smp`` and its children), ``restart()``, ``pids()``,
    ``beam_pid()``, ``rss()``, ``ctl(*args)``, ``host``/``port``/``amqp_url``,
    ``log_tail()``. ``stop()`` and ``kill()`` return once every process of
    the node has exited, so the node can be started again on its ports.
``Cluster(size=3, base_dir=None, base_port=None, purpose="test")``
    ``start()`` boots the nodes at once, joins nodes 2… to node 1 one at a
    time and checks that all are running members; ``nodes``, ``addresses``,
    ``kill(i)``, ``stop(i)``, ``start_node(i)`` (waits until it has rejoined),
    ``rolling_restart(wait_between)``, ``running_members()``,
    ``wait_members()``, ``ctl(i, *args)``, ``stop_all()``. Indexes are
    0-based: ``kill(0)`` kills the first node.
``reserve_ports(start)``
    a ``PortReservation`` of a free ``PortBlock`` (``release()`` it after).
``ensure_system_broker(host, port)``
    what ``make test`` and ``.ci/run`` do first: start the system node with
    ``rabbitmq-server -detached`` when nothing answers on 127.0.0.1:5672.

Command line (``python -m devtools.rabbitmq …``):

``node --dir DIR --port N [--name NAME] -- COMMAND…``
    run COMMAND beside a private node on 127.0.0.1:N (``BROKER_HOST`` and
    ``BROKER_PORT`` added to its environment), forward SIGINT/SIGTERM to it,
    stop the node when it ends, and exit with its code.
``run --config FILE --dir DIR -- COMMAND…``
    ``make run``: COMMAND as it is (``exec``) when the configured broker
    answers, or is not on this machine; else beside a private node under DIR
    (the first free block from 5673); else (no ``rabbitmq-server``, no free
    ports, a node that does not boot) one line saying why, then COMMAND
    anyway.
``ensure [--host H] [--port P] [--timeout S]``
    ``make test`` and ``.ci/run``: see ``ensure_system_broker``.

``$NOTIFICATIONS_RABBITMQ_BIN`` points at another folder of the package's
scripts (a folder without them counts as no RabbitMQ).

Hand-written rather than with psutil: the Makefile and the CI script run
this before any virtual environment exists, and what is needed of the
process table (children, command name, one environment variable) is a few
reads of ``/proc``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn

#: Where Debian's package keeps the scripts that run as the calling user.
PACKAGE_BIN = Path("/usr/lib/rabbitmq/bin")

#: The environment variable that points at another script folder.
BIN_VARIABLE = "NOTIFICATIONS_RABBITMQ_BIN"

#: Where the package's system node listens (its default configuration).
SYSTEM_AMQP_PORT = 5672

#: Ports a private node never takes: the system node's epmd, AMQP (plain
#: and TLS), management and distribution ports.
SYSTEM_PORTS = frozenset({4369, 5671, 5672, 15672, 25672})

#: Each node or cluster takes this many consecutive ports (see PortBlock).
BLOCK_SIZE = 100

#: Where a test cluster's port search starts, and ``make run``'s.
CLUSTER_PORTS_FROM = 21000
RUN_PORTS_FROM = 5673

#: Lock files of the port blocks: one place for every session on the machine.
#: Nothing is written to them (a symlink planted there could not be harmed).
LOCK_DIR = Path("/tmp")  # noqa: S108 - shared on purpose: the ports are the machine's

#: Environment variables every private node's processes carry, so that an
#: orphan left by a killed session can be recognized (and only ours).
NODE_MARK = "NOTIFICATIONS_RABBITMQ_NODE"
PORT_MARK = "NOTIFICATIONS_RABBITMQ_AMQP_PORT"

INSTALL_HINT = "apt-get install rabbitmq-server"


class RabbitMQError(RuntimeError):
    """A private node or cluster could not be started, stopped or queried."""


# -- the package -----------------------------------------------------------


def package_bin() -> Path | None:
    """The package's own script folder, or None when rabbitmq-server is not installed.

    ``$NOTIFICATIONS_RABBITMQ_BIN``, when set, is the only place looked at (a
    RabbitMQ installed elsewhere; a folder without it acts as no RabbitMQ).
    """
    override = os.environ.get(BIN_VARIABLE)
    if override is not None:
        return Path(override) if (Path(override) / "rabbitmq-server").exists() else None
    if (PACKAGE_BIN / "rabbitmq-server").exists():
        return PACKAGE_BIN
    # Another layout of the package: ask dpkg where it put the scripts.
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        listing = subprocess.run(
            ["dpkg", "-L", "rabbitmq-server"],  # noqa: S607 - dpkg from the PATH
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
        for line in listing.splitlines():
            if line.endswith("/lib/rabbitmq/bin/rabbitmq-server"):
                return Path(line).parent
    return None


def require_package_bin() -> Path:
    """The package's script folder; RabbitMQError saying what to install when it is missing."""
    found = package_bin()
    if found is None:
        raise RabbitMQError(f"RabbitMQ is not installed ({INSTALL_HINT})")
    return found


# -- ports -----------------------------------------------------------------


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (what ``connect`` picks from)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a listener could bind ``host:port`` now (as Erlang does, with SO_REUSEADDR)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class PortBlock:
    """A hundred consecutive ports for one node or a cluster of up to 10 nodes.

    ``base + i``: AMQP of node ``i``; ``base + 10 + i``: its Erlang
    distribution; ``base + 20…29``: ``rabbitmqctl``'s own distribution
    listener (it takes a free one); ``base + 30…99``: stream replication
    (one per stream replica, shared by the nodes).
    """

    base: int

    def amqp(self, index: int) -> int:
        return self.base + index

    def dist(self, index: int) -> int:
        return self.base + 10 + index

    @property
    def ctl(self) -> tuple[int, int]:
        return self.base + 20, self.base + 29

    @property
    def streams(self) -> tuple[int, int]:
        return self.base + 30, self.base + BLOCK_SIZE - 1

    @property
    def ports(self) -> range:
        return range(self.base, self.base + BLOCK_SIZE)


class PortReservation:
    """A port block held through an exclusive lock file, until ``release()``."""

    def __init__(self, block: PortBlock, lock: IO[bytes]):
        self.block = block
        self._lock: IO[bytes] | None = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file drops the flock
            self._lock = None


def _try_block(base: int) -> PortReservation | None:
    block = PortBlock(base)
    if SYSTEM_PORTS.intersection(block.ports):
        return None
    try:
        lock = open(LOCK_DIR / f"notifications-rabbitmq-{base}.lock", "ab")
    except OSError:  # another user's lock file
        return None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        return None
    # The lock is ours, so a node still using the block is an orphan of a
    # session that died without stopping it.
    kill_pids(orphans(block))
    if all(port_free(port) for port in block.ports):
        return PortReservation(block, lock)
    lock.close()
    return None


def reserve_ports(start: int, exact: bool = False) -> PortReservation:
    """The first free block from ``start`` (in steps of 100) below the ephemeral range.

    ``exact``: ``start`` itself or RabbitMQError.
    """
    limit = ephemeral_low()
    bases = [start] if exact else range(start, limit - BLOCK_SIZE + 1, BLOCK_SIZE)
    for base in bases:
        if base < 1024 or base + BLOCK_SIZE > limit:
            raise RabbitMQError(
                f"ports {base}-{base + BLOCK_SIZE - 1} are not between 1024 and the "
                f"ephemeral range (from {limit})"
            )
        reservation = _try_block(base)
        if reservation is not None:
            return reservation
    if exact:
        ports = PortBlock(start).ports
        why = "holds a port of the system node" if SYSTEM_PORTS.intersection(ports) else "is busy"
        raise RabbitMQError(f"the block of ports {start}-{ports[-1]} {why}")
    raise RabbitMQError(f"no free block of {BLOCK_SIZE} loopback ports from {start} to {limit}")


# -- processes ---------------------------------------------------------------


def _stat(pid: int) -> tuple[str, str, int] | None:
    """(command name, state, parent pid) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces and parentheses.
    name = text[text.index("(") + 1 : text.rindex(")")]
    state, ppid = text[text.rindex(")") + 2 :].split()[:2]
    return name, state, int(ppid)


def start_time(pid: int) -> int | None:
    """When a process started (clock ticks since boot): with its pid, who it is."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 of stat; the fields after the command name start at field 3.
    return int(text[text.rindex(")") + 2 :].split()[19])


def snapshot(pids: Iterable[int]) -> dict[int, int | None]:
    """The processes as they are now, to find them again later (not a new one with a reused pid)."""
    return {pid: start_time(pid) for pid in pids}


def still_there(processes: dict[int, int | None]) -> list[int]:
    """The processes of a ``snapshot`` that have not exited."""
    return [pid for pid, started in processes.items() if alive(pid) and start_time(pid) == started]


def alive(pid: int) -> bool:
    """Whether a process exists and has not exited (a zombie has)."""
    stat = _stat(pid)
    return stat is not None and stat[1] not in ("Z", "X")


def process_name(pid: int) -> str | None:
    stat = _stat(pid)
    return stat[0] if stat else None


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def descendants(root: int) -> set[int]:
    """Every process below ``root`` in the process tree."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        stat = _stat(pid)
        if stat is not None:
            children.setdefault(stat[2], []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def environment_value(pid: int, name: str) -> str | None:
    """One variable of a process's environment (None if absent or not ours to read)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = name.encode() + b"="
    for entry in raw.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


def orphans(block: PortBlock) -> list[int]:
    """The processes of private nodes whose AMQP port is in ``block``."""
    found = []
    for pid in _all_pids():
        value = environment_value(pid, PORT_MARK)
        if value is not None and value.isdigit() and int(value) in block.ports:
            found.append(pid)
    return found


def kill_pids(pids: Iterable[int], timeout: float = 30.0) -> None:
    """SIGKILL these processes (never an epmd) and wait until they have exited."""
    targets = [pid for pid in pids if process_name(pid) != "epmd"]
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_exited(targets, timeout)


def wait_exited(pids: Iterable[int], timeout: float) -> bool:
    """Wait until none of ``pids`` is alive; False if some still are after ``timeout``."""
    pending = list(pids)
    deadline = time.monotonic() + timeout
    while True:
        pending = [pid for pid in pending if alive(pid)]
        if not pending:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 200 * lines))
            text = file.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def clean_environment(**extra: str) -> dict[str, str]:
    """The environment of every process of a private node: nothing of the caller's
    but PATH, TMPDIR and TZ, plus ``extra``."""
    environment = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    for name in ("TMPDIR", "TZ"):
        if name in os.environ:
            environment[name] = os.environ[name]
    # The Erlang and Elixir runtimes warn, and may fail, without a UTF-8 locale.
    environment["LANG"] = environment["LC_ALL"] = "C.UTF-8"
    environment.update(extra)
    return environment


def write_cookie(home: Path) -> None:
    """Give ``home`` an ``.erlang.cookie`` of its own (random, mode 400) if it has none."""
    home.mkdir(parents=True, exist_ok=True)
    cookie = home / ".erlang.cookie"
    if cookie.exists():
        return
    descriptor = os.open(cookie, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(descriptor, "w") as file:
        file.write(secrets.token_hex(20).upper())


# -- one node ------------------------------------------------------------------


class Node:
    """One private RabbitMQ node, run with the package's scripts as the calling user.

    ``base_dir`` holds its files (created as needed): configuration, ``mnesia/``
    (data), ``log/``, ``rabbitmq.pid`` (the ``beam.smp`` pid) and
    ``output.log`` (the server script's own output). ``home`` (default
    ``base_dir/home``) holds the cookie; the nodes of a cluster share one.
    ``ctl_ports`` is the range ``rabbitmqctl`` listens in, ``stream_ports``
    that of stream replication; both must stay out of the ephemeral range.
    Take the ports from a ``reserve_ports`` block held while the node runs:
    a node in a block nobody holds is an orphan, killed by the next session
    that reserves it.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        name: str,
        amqp_port: int,
        dist_port: int,
        base_dir: Path | str,
        ctl_ports: tuple[int, int] | None = None,
        stream_ports: tuple[int, int] | None = None,
        home: Path | str | None = None,
    ):
        self.name = name if "@" in name else f"{name}@localhost"
        self.port = amqp_port
        self.dist_port = dist_port
        self.base_dir = Path(base_dir).resolve()
        self.ctl_ports = ctl_ports or (dist_port + 1, dist_port + 9)
        self.stream_ports = stream_ports or (dist_port + 100, dist_port + 199)
        self.home = Path(home).resolve() if home is not None else self.base_dir / "home"
        self.pid_file = self.base_dir / "rabbitmq.pid"
        self.output_file = self.base_dir / "output.log"
        self.log_file = self.base_dir / "log" / f"{self.name}.log"
        self._process: subprocess.Popen | None = None

    def __repr__(self) -> str:
        return f"<Node {self.name} on {self.host}:{self.port}>"

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/"

    # files and environments

    def _prepare(self) -> Path:
        """Write the node's files; the package's script folder."""
        scripts = require_package_bin()
        for folder in (self.base_dir, self.base_dir / "mnesia", self.base_dir / "log"):
            folder.mkdir(parents=True, exist_ok=True)
        write_cookie(self.home)
        (self.base_dir / "rabbitmq-env.conf").write_text("")
        (self.base_dir / "enabled_plugins").write_text("[].\n")
        (self.base_dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\nlog.console = false\nlog.file.level = info\n"
        )
        low, high = self.stream_ports
        (self.base_dir / "advanced.config").write_text(
            f"[{{osiris, [{{port_range, {{{low}, {high}}}}}]}}].\n"
        )
        return scripts

    def _common_environment(self) -> dict[str, str]:
        low, high = self.ctl_ports
        return clean_environment(
            HOME=str(self.home),
            RABBITMQ_CONF_ENV_FILE=str(self.base_dir / "rabbitmq-env.conf"),
            RABBITMQ_CTL_DIST_PORT_MIN=str(low),
            RABBITMQ_CTL_DIST_PORT_MAX=str(high),
            RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            # Should this node be the one to start epmd, it listens on loopback only.
            ERL_EPMD_ADDRESS="127.0.0.1",
        )

    def server_environment(self) -> dict[str, str]:
        """The environment ``rabbitmq-server`` runs with."""
        return {
            **self._common_environment(),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.base_dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base_dir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base_dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.base_dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base_dir / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            # Unbound schedulers: several nodes boot faster side by side on few cores.
            "RABBITMQ_SCHEDULER_BIND_TYPE": "u",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            NODE_MARK: self.name,
            PORT_MARK: str(self.port),
        }

    # processes

    def beam_pid(self) -> int | None:
        """The pid of this node's running ``beam.smp``, or None."""
        candidates: list[int] = []
        with contextlib.suppress(OSError, ValueError):
            candidates.append(int(self.pid_file.read_text().strip()))
        if self._process is not None:
            candidates.extend(descendants(self._process.pid))
        for pid in candidates:
            if (
                alive(pid)
                and process_name(pid) == "beam.smp"
                and environment_value(pid, NODE_MARK) == self.name
            ):
                return pid
        return None

    def pids(self) -> list[int]:
        """Every live process of the node: the server script, ``beam.smp`` and its children."""
        found: set[int] = set()
        if self._process is not None and self._process.poll() is None:
            found.add(self._process.pid)
            found |= descendants(self._process.pid)
        beam = self.beam_pid()
        if beam is not None:
            found.add(beam)
            found |= descendants(beam)
        return sorted(pid for pid in found if alive(pid) and process_name(pid) != "epmd")

    def running(self) -> bool:
        return bool(self.pids())

    def rss(self) -> int:
        """The resident memory of the node's processes, in bytes (0 when stopped)."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total

    def start(self) -> None:
        """Start the node (returns at once; see ``wait_ready``)."""
        if self.running():
            raise RabbitMQError(f"{self.name} is already running")
        scripts = self._prepare()
        # A node of an earlier owner of this folder that was never stopped.
        stale = self.beam_pid()
        if stale is not None:
            kill_pids([stale, *descendants(stale)])
        busy = [port for port in (self.port, self.dist_port) if not port_free(port)]
        if busy:
            raise RabbitMQError(f"cannot start {self.name}: port(s) {busy} already in use")
        with self.output_file.open("ab") as output:
            self._process = subprocess.Popen(  # noqa: S603 - the package's own script
                [str(scripts / "rabbitmq-server")],
                cwd=self.base_dir,
                env=self.server_environment(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C meant for the caller does not reach it.
                start_new_session=True,
            )
        atexit.register(self.kill)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the node has booted; RabbitMQError (with its log) when it does not."""
        deadline = time.monotonic() + timeout
        # ``rabbitmqctl await_startup`` fails at once while the node is not yet
        # registered with epmd: wait for its AMQP listener first.
        while not answers(self.host, self.port, timeout=0.5):
            if self._process is not None and self._process.poll() is not None:
                raise RabbitMQError(
                    f"{self.name} exited with code {self._process.returncode} while "
                    f"starting\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RabbitMQError(
                    f"{self.name} did not listen on {self.host}:{self.port} within "
                    f"{timeout:g} s\n{self.log_tail()}"
                )
            time.sleep(0.1)
        left = max(1, int(deadline - time.monotonic()))
        self.ctl("await_startup", "--timeout", str(left), timeout=left + 15)

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -n <node> args…``; its output, or RabbitMQError."""
        return self.tool("rabbitmqctl", *args, timeout=timeout)

    def tool(self, script: str, *args: str, timeout: float = 60.0) -> str:
        """Run one of the package's CLI tools (``rabbitmqctl``, ``rabbitmq-queues``…)
        against this node; its standard output, or RabbitMQError."""
        command = [str(require_package_bin() / script), "-n", self.name, *args]
        try:
            done = subprocess.run(  # noqa: S603 - the package's own script
                command,
                env=self._common_environment(),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise RabbitMQError(f"{script} {' '.join(args)} on {self.name}: timed out") from error
        if done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip())[-2000:]
            raise RabbitMQError(
                f"{script} {' '.join(args)} on {self.name} failed ({done.returncode}): {said}"
            )
        return done.stdout

    def kill(self) -> None:
        """SIGKILL ``beam.smp`` and the node's other processes; return once they have exited."""
        # The whole family first: once the VM is dead its children
        # (erl_child_setup, inet_gethost) leave its branch of the tree.
        family = snapshot(self.pids())
        beam = self.beam_pid()
        if beam is not None:
            # First the VM itself, so that it dies as in a crash and not
            # because its script wrapper went away.
            kill_pids([beam])
        self._finish(family)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node politely (``rabbitmqctl stop``), else by SIGTERM, else SIGKILL.

        Returns once every process of the node has exited.
        """
        family = snapshot(self.pids())
        beam = self.beam_pid()
        if beam is not None:
            with contextlib.suppress(RabbitMQError):
                # With the pid file, rabbitmqctl waits until the VM has exited.
                self.ctl("stop", str(self.pid_file), timeout=timeout)
            if alive(beam):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(beam, signal.SIGTERM)
                wait_exited([beam], 10.0)
        if self._process is not None:
            # The server script exits once the VM has.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5)
        # The VM's children exit with it; whatever has not is killed.
        wait_exited(still_there(family), 5.0)
        self._finish(family)

    def _finish(self, family: dict[int, int | None]) -> None:
        """Kill what is left of the node's processes and wait until all have exited."""
        kill_pids({*still_there(family), *self.pids()})
        if self._process is not None:
            self._process.wait(timeout=30)
            self._process = None
        leftover = self.pids()
        if leftover:
            raise RabbitMQError(f"{self.name}: processes {leftover} did not exit")
        atexit.unregister(self.kill)

    def restart(self, timeout: float = 60.0) -> None:
        """Stop, start again on the same name, ports and data, and wait until ready."""
        self.stop()
        self.start()
        self.wait_ready(timeout)

    def log_tail(self, lines: int = 25) -> str:
        """The last lines of the node's log and of its script's output, for error messages."""
        parts = []
        for path in (self.log_file, self.output_file):
            text = _tail(path, lines)
            if text:
                parts.append(f"--- {path} (last {lines} lines)\n{text}")
        return "\n".join(parts) or f"(no log in {self.base_dir})"


def in_parallel(calls: Iterable[Callable[[], object]], collect: bool = False) -> list[Exception]:
    """Run the calls side by side in threads and wait for all.

    Raises the first error, or with ``collect`` returns the errors.
    """
    calls = list(calls)
    if not calls:
        return []
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
    errors = [error for future in futures if (error := future.exception()) is not None]
    if errors and not collect:
        raise errors[0]
    return errors


# -- a cluster -----------------------------------------------------------------


class Cluster:
    """``size`` private nodes clustered together, on one block of loopback ports.

    ``base_dir`` holds a folder per node and their shared HOME (with the
    cookie); without one, a temporary folder is made and removed by
    ``stop_all``. ``base_port`` takes exactly that port block, else the first
    free one from 21000. Node names are ``notif-<purpose>-<base port>-<n>``.
    """

    def __init__(
        self,
        size: int = 3,
        base_dir: Path | str | None = None,
        base_port: int | None = None,
        purpose: str = "test",
    ):
        if not 1 <= size <= 10:
            raise ValueError(f"a cluster has 1 to 10 nodes, not {size}")
        self.size = size
        self.purpose = purpose
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.base_port = base_port
        self.nodes: list[Node] = []
        self._reservation: PortReservation | None = None

    def __repr__(self) -> str:
        return f"<Cluster {[node.name for node in self.nodes]}>"

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node's AMQP listener, in node order."""
        return [(node.host, node.port) for node in self.nodes]

    def start(self, timeout: float = 120.0) -> None:
        """Boot the nodes, cluster them, check every one is a running member.

        On failure everything started is stopped, and RabbitMQError carries
        the tail of every node's log.
        """
        require_package_bin()
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="notifications-rabbitmq-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        start = self.base_port or CLUSTER_PORTS_FROM
        self._reservation = reserve_ports(start, exact=self.base_port is not None)
        block = self._reservation.block
        home = self.base_dir / "home"
        self.nodes = [
            Node(
                f"notif-{self.purpose}-{block.base}-{index + 1}",
                block.amqp(index),
                block.dist(index),
                self.base_dir / f"node{index + 1}",
                ctl_ports=block.ctl,
                stream_ports=block.streams,
                home=home,
            )
            for index in range(self.size)
        ]
        deadline = time.monotonic() + timeout
        try:
            for node in self.nodes:
                node.start()
            in_parallel(
                lambda node=node: node.wait_ready(max(1.0, deadline - time.monotonic()))
                for node in self.nodes
            )
            first = self.nodes[0]
            # One at a time: joins running side by side can time out on mnesia locks.
            for node in self.nodes[1:]:
                node.ctl("stop_app")
                node.ctl("reset")
                node.ctl("join_cluster", first.name)
                node.ctl("start_app")
            self.wait_members(max(1.0, deadline - time.monotonic()))
        except BaseException as error:
            report = self.log_tail()
            try:
                self.stop_all()
            except RabbitMQError as stop_error:
                report += f"\n{stop_error}"
            if isinstance(error, RabbitMQError):
                raise RabbitMQError(f"the cluster did not start: {error}\n{report}") from error
            raise

    def node(self, index: int) -> Node:
        return self.nodes[index]

    def ctl(self, index: int, *args: str, timeout: float = 60.0) -> str:
        """``rabbitmqctl`` against node ``index``; its output."""
        return self.nodes[index].ctl(*args, timeout=timeout)

    def running_members(self, index: int | None = None) -> list[str]:
        """The running members as node ``index`` sees them (default: the first running)."""
        if index is None:
            index = next((i for i, node in enumerate(self.nodes) if node.running()), 0)
        status = json.loads(self.ctl(index, "cluster_status", "--formatter", "json"))
        return sorted(status.get("running_nodes", []))

    def wait_members(self, timeout: float = 60.0) -> None:
        """Wait until every node is running and a member; RabbitMQError after ``timeout``."""
        expected = sorted(node.name for node in self.nodes)
        deadline = time.monotonic() + timeout
        members: list[str] | str = []
        while True:
            try:
                members = self.running_members()
            except (RabbitMQError, ValueError) as error:
                members = str(error)
            if members == expected:
                return
            if time.monotonic() > deadline:
                raise RabbitMQError(
                    f"running members are {members}, not {expected}, after {timeout:g} s"
                )
            time.sleep(0.25)

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (see Node.kill)."""
        self.nodes[index].kill()

    def stop(self, index: int) -> None:
        """Stop node ``index`` politely (see Node.stop)."""
        self.nodes[index].stop()

    def start_node(self, index: int, timeout: float = 90.0) -> None:
        """Start node ``index`` again (same name, ports, data) and wait until it has rejoined."""
        deadline = time.monotonic() + timeout
        node = self.nodes[index]
        node.start()
        node.wait_ready(max(1.0, deadline - time.monotonic()))
        self.wait_members(max(1.0, deadline - time.monotonic()))

    def rolling_restart(self, wait_between: float = 5.0, timeout: float = 90.0) -> None:
        """Stop and start each node in turn, each rejoined before the next goes down."""
        for index in range(len(self.nodes)):
            self.stop(index)
            self.start_node(index, timeout)
            if index < len(self.nodes) - 1:
                time.sleep(wait_between)

    def stop_all(self) -> None:
        """Stop every node, side by side, by pid; release the ports; remove a temporary folder."""
        errors = in_parallel((node.stop for node in self.nodes), collect=True)
        if self._reservation is not None:
            self._reservation.release()
            self._reservation = None
        if self._own_dir and self.base_dir is not None and not errors:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        if errors:
            raise RabbitMQError(f"the cluster did not stop: {errors}")

    def rss(self) -> list[int]:
        """Each node's resident memory in bytes."""
        return [node.rss() for node in self.nodes]

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(f"=== {node.name}\n{node.log_tail(lines)}" for node in self.nodes)


# -- the system node -------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ensure_system_broker(host: str = "127.0.0.1", port: int = 5672, timeout: float = 60.0) -> None:
    """Make sure a broker answers on ``host:port``, starting the system node if needed.

    When nothing answers on a loopback address on 5672 and the package is installed,
    ``rabbitmq-server -detached`` (the system's command, which runs the
    system node as its own user) is started and waited for. RabbitMQError
    when the broker still does not answer, saying what to install if that
    is the reason.
    """
    if answers(host, port):
        return
    if not is_loopback(host) or port != SYSTEM_AMQP_PORT:
        # Not where the system node listens: nothing to start here.
        raise RabbitMQError(f"RabbitMQ is not answering on {host}:{port}")
    # The system's wrappers on purpose: this is the system node, run as the
    # rabbitmq user with its own configuration.
    search = os.pathsep.join((os.environ.get("PATH", ""), "/usr/sbin", "/sbin"))
    server, ctl = (shutil.which(name, path=search) for name in ("rabbitmq-server", "rabbitmqctl"))
    if package_bin() is None or server is None or ctl is None:
        raise RabbitMQError(
            f"RabbitMQ is not answering on {host}:{port} and is not installed ({INSTALL_HINT})"
        )
    print(f"RabbitMQ is not answering on {host}:{port}; starting it", file=sys.stderr)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run([server, "-detached"], timeout=60, check=False)  # noqa: S603
    deadline = time.monotonic() + timeout
    while not answers(host, port):
        if time.monotonic() > deadline:
            raise RabbitMQError(f"RabbitMQ did not come up on {host}:{port}")
        time.sleep(1)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(  # noqa: S603
            [ctl, "await_startup"],
            capture_output=True,
            timeout=timeout,
            check=False,
        )


# -- the command line ------------------------------------------------------------


def _exit_code(returncode: int) -> int:
    """A child's return code as a shell reports it (128 + signal when killed)."""
    return 128 - returncode if returncode < 0 else returncode


class _Interrupted(Exception):
    pass


def run_beside_node(
    node: Node,
    command: Sequence[str],
    timeout: float = 60.0,
    announce: str | None = None,
    or_without: bool = False,
) -> int:
    """Start ``node``, run ``command`` with BROKER_HOST/BROKER_PORT pointing at it,
    forward SIGINT and SIGTERM to the command, stop the node when it ends.

    ``announce`` is printed once the node is ready. When the node does not
    start, RabbitMQError; with ``or_without``, one line saying so, and the
    command runs anyway (with the environment it was given). Returns the
    command's exit code (as a shell would report it).
    """
    child: subprocess.Popen | None = None

    def forward(signum, frame) -> None:
        if child is None:
            # Still booting the node: give up, the node is stopped below.
            raise _Interrupted(signum)
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            node.start()
            node.wait_ready(timeout)
        except RabbitMQError as error:
            if not or_without:
                raise
            node.stop()
            print(
                f"notifications: the private RabbitMQ node did not start "
                f"({str(error).splitlines()[0]}; its logs are in {node.base_dir}); "
                f"the daemon starts without it",
                file=sys.stderr,
                flush=True,
            )
            environment = dict(os.environ)
        else:
            if announce:
                print(announce, file=sys.stderr, flush=True)
            environment = {**os.environ, "BROKER_HOST": node.host, "BROKER_PORT": str(node.port)}
        # Its own process group: a Ctrl-C reaches it once, forwarded from here.
        child = subprocess.Popen(list(command), env=environment, process_group=0)  # noqa: S603
        return _exit_code(child.wait())
    except _Interrupted as interrupted:
        return 128 + interrupted.args[0]
    finally:
        # Further signals must not interrupt the node's stop.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        try:
            node.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _node_command(arguments: argparse.Namespace) -> int:
    reservation = reserve_ports(arguments.port, exact=True)
    block = reservation.block
    try:
        node = Node(
            arguments.name or f"notif-node-{block.base}",
            block.amqp(0),
            block.dist(0),
            arguments.dir,
            ctl_ports=block.ctl,
            stream_ports=block.streams,
        )
        return run_beside_node(node, arguments.command)
    finally:
        reservation.release()


def _configured_broker(config: str) -> tuple[str, int] | None:
    """The broker host and port of a configuration (environment included), or None
    when it cannot be read (the daemon then says why itself)."""
    from notifications.config import load_config
    from notifications.errors import ConfigError

    try:
        broker = load_config(Path(config)).broker
    except (ConfigError, OSError):
        return None
    return broker.host, broker.port


def _run_anyway(command: Sequence[str], why: str) -> NoReturn:
    """Say in one line why the daemon runs without a broker, and become the daemon."""
    print(
        f'notifications: {why}; the daemon starts anyway and answers "queued" until a '
        f"broker answers",
        file=sys.stderr,
        flush=True,
    )
    os.execvp(command[0], command)  # noqa: S606 - the daemon, as make run always ran it


def _run_command(arguments: argparse.Namespace) -> int:
    command = arguments.command
    broker = _configured_broker(arguments.config)
    if broker is None or answers(*broker):
        # Exactly what make run did before: the daemon alone, in this process.
        os.execvp(command[0], command)  # noqa: S606
    host, port = broker
    if not is_loopback(host):
        _run_anyway(command, f"RabbitMQ is not answering on {host}:{port}")
    if package_bin() is None:
        _run_anyway(
            command,
            f"nothing answers on {host}:{port} and RabbitMQ is not installed ({INSTALL_HINT})",
        )
    try:
        reservation = reserve_ports(RUN_PORTS_FROM)
    except RabbitMQError as error:
        _run_anyway(command, f"nothing answers on {host}:{port} and {error}")
    block = reservation.block
    try:
        directory = Path(arguments.dir)
        node = Node(
            f"notif-run-{block.base}",
            block.amqp(0),
            block.dist(0),
            directory / f"notif-run-{block.base}",
            ctl_ports=block.ctl,
            stream_ports=block.streams,
            home=directory / "home",
        )
        announce = (
            f"notifications: nothing answers on {host}:{port}; the daemon uses a private "
            f"RabbitMQ node on {node.host}:{node.port} ({node.base_dir}), stopped with it"
        )
        return run_beside_node(node, command, announce=announce, or_without=True)
    finally:
        reservation.release()


def _ensure_command(arguments: argparse.Namespace) -> int:
    try:
        ensure_system_broker(arguments.host, arguments.port, arguments.timeout)
    except RabbitMQError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.rabbitmq", description=__doc__)
    commands = parser.add_subparsers(dest="action", required=True)

    node = commands.add_parser("node", help="run a command beside a private node")
    node.add_argument("--dir", required=True, help="the node's folder")
    node.add_argument("--port", type=int, required=True, help="its AMQP port (and the 99 next)")
    node.add_argument("--name", help="its node name (default notif-node-<port>)")
    node.add_argument("command", nargs="+", help="the command, after --")
    node.set_defaults(run=_node_command)

    run = commands.add_parser("run", help="make run: the daemon, with a private node if needed")
    run.add_argument("--config", required=True, help="the daemon's configuration file")
    run.add_argument("--dir", required=True, help="where a private node keeps its files")
    run.add_argument("command", nargs="+", help="the daemon's command, after --")
    run.set_defaults(run=_run_command)

    ensure = commands.add_parser("ensure", help="make test: make sure the tests' broker answers")
    ensure.add_argument("--host", default=os.environ.get("BROKER_HOST", "127.0.0.1"))
    ensure.add_argument("--port", type=int, default=int(os.environ.get("BROKER_PORT", "5672")))
    ensure.add_argument("--timeout", type=float, default=60.0)
    ensure.set_defaults(run=_ensure_command)

    arguments = parser.parse_args(argv)
    try:
        return arguments.run(arguments)
    except RabbitMQError as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
