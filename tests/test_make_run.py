"""``make run`` (README, "Quick start") with and without a broker, as a user runs it.

Each test runs ``make run`` in a subprocess on a configuration of its own and
a free loopback port, with the virtual environment of the tests. Without a
broker at the configured address, a private RabbitMQ node must come up under
``RABBITMQ_DIR`` and be gone once ``make`` has exited; with one, the daemon
must run exactly as before, straight under ``make``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.rabbitmq import BIN_VARIABLE, alive, descendants, package_bin, process_name
from tests.conftest import BROKER_HOST, BROKER_PORT, make_config, test_broker
from tests.helpers import closed_port, unavailable
from tests.processes import ROOT, free_port, loopback_endpoint, request, wait_until

NOTIFICATION = {"service": "Deployer", "group": "ops", "type": "deploy", "text": "v2"}


class MakeRun:
    """``make run`` on ``config``, listening on a free loopback port; output in a file."""

    def __init__(self, directory: Path, config: Path, rabbitmq_dir: Path, env=None):
        if shutil.which("make") is None:
            unavailable("make is not installed (apt-get install make)")
        venv = Path(sys.prefix)
        self.port = free_port()
        self.log_path = directory / "make-run.log"
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        # The broker must come from the configuration alone.
        for name in ("BROKER_HOST", "BROKER_PORT"):
            environment.pop(name, None)
        command = [
            "make",
            "--no-print-directory",
            "-C",
            str(ROOT),
            # The tests' environment is up to date: never rebuild it from here.
            "-o",
            f"{venv}/bin/twistd",
            "run",
            f"VENV={venv}",
            f"CONFIG={config}",
            f"PORT={loopback_endpoint(self.port)}",
            f"RABBITMQ_DIR={rabbitmq_dir}",
        ]
        with self.log_path.open("wb") as log:
            # Its own session, as in a terminal: a Ctrl-C goes to its group.
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict | None:
        try:
            status, body = request(self.port, "GET", "/health")
        except OSError:
            return None
        return json.loads(body) if status == 200 else None

    def wait_health(self, connected: bool, timeout: float) -> dict:
        """Wait until ``/health`` answers with that broker state; its answer."""
        answers: list[dict] = []

        def check() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"make run exited early:\n{self.output()[-3000:]}")
            health = self.health()
            if health is not None:
                answers.append(health)
            return health is not None and health["broker"]["connected"] is connected

        try:
            wait_until(check, timeout)
        except AssertionError as error:
            raise AssertionError(f"{error}: {answers[-1:]}\n{self.output()[-3000:]}") from None
        return answers[-1]

    def interrupt(self, number: int) -> None:
        """SIGINT as Ctrl-C sends it (to the whole group), SIGTERM to make alone."""
        if number == signal.SIGINT:
            os.killpg(self.process.pid, number)
        else:
            self.process.send_signal(number)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            raise AssertionError(f"make run did not exit:\n{self.output()[-3000:]}") from None

    def stop(self) -> int:
        """SIGTERM to make, then wait for the end; the exit code."""
        self.interrupt(signal.SIGTERM)
        return self.wait()

    def the_line(self, text: str) -> str:
        """The one line of the output that holds ``text``; none or several fail the test."""
        lines = [line for line in self.output().splitlines() if text in line]
        assert len(lines) == 1, self.output()[-3000:]
        return lines[0]


@pytest.fixture
def closed_broker_config(tmp_path) -> Path:
    """A configuration whose broker is a loopback port nothing listens on."""
    directory = tmp_path / "etc"
    directory.mkdir()
    make_config(directory, test_broker(port=closed_port()))
    return directory / "notifications.toml"


def beam_of(rabbitmq_dir: Path) -> int:
    """The pid of the ``beam.smp`` of the private node under ``rabbitmq_dir``."""
    [pid_file] = rabbitmq_dir.glob("*/rabbitmq.pid")
    pid = int(pid_file.read_text())
    assert process_name(pid) == "beam.smp"
    return pid


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_without_a_broker_make_run_brings_a_private_node_and_stops_it(
    tmp_path, closed_broker_config, number
):
    if package_bin() is None:
        pytest.fail("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
    rabbitmq_dir = tmp_path / "rabbitmq"
    run = MakeRun(tmp_path, closed_broker_config, rabbitmq_dir)
    try:
        run.wait_health(connected=True, timeout=90)
        beam = beam_of(rabbitmq_dir)
        family = {beam, *descendants(beam)}
        status, body = request(
            run.port, "POST", "/gate/Notification/Acme", json.dumps(NOTIFICATION).encode()
        )
        assert status == 200, body
        assert json.loads(body)["actions"][0]["status"] == "published"
        line = run.the_line("private RabbitMQ node")
        assert "127.0.0.1:" in line
        assert str(rabbitmq_dir) in line
    finally:
        run.interrupt(number)
        code = run.wait()
    # twistd ends itself with the signal it was stopped by, and make reports it.
    assert code != 0
    assert not [pid for pid in family if alive(pid)], "the private node is still running"
    output = run.output()
    assert "Server Shut Down." in output
    assert "Traceback" not in output, output[-3000:]


def test_without_rabbitmq_installed_make_run_says_what_to_install(tmp_path, closed_broker_config):
    run = MakeRun(
        tmp_path,
        closed_broker_config,
        tmp_path / "rabbitmq",
        env={BIN_VARIABLE: str(tmp_path / "no-rabbitmq")},
    )
    try:
        health = run.wait_health(connected=False, timeout=30)
        assert health["status"] == "degraded"
        status, body = request(
            run.port, "POST", "/gate/Notification/Acme", json.dumps(NOTIFICATION).encode()
        )
        assert status == 200, body
        assert json.loads(body)["actions"][0]["status"] == "queued"
    finally:
        run.stop()
    assert "apt-get install rabbitmq-server" in run.the_line("apt-get install")
    assert not (tmp_path / "rabbitmq").exists()


def test_when_the_private_node_fails_make_run_runs_the_daemon_anyway(
    tmp_path, closed_broker_config
):
    # A RabbitMQ whose server script fails at once.
    scripts = tmp_path / "broken-rabbitmq"
    scripts.mkdir()
    server = scripts / "rabbitmq-server"
    server.write_text("#!/bin/sh\necho 'cannot boot: broken on purpose' >&2\nexit 1\n")
    server.chmod(0o755)
    rabbitmq_dir = tmp_path / "rabbitmq"
    run = MakeRun(tmp_path, closed_broker_config, rabbitmq_dir, env={BIN_VARIABLE: str(scripts)})
    try:
        health = run.wait_health(connected=False, timeout=30)
        assert health["status"] == "degraded"
    finally:
        run.stop()
    line = run.the_line("did not start")
    assert "exited with code 1" in line
    assert str(rabbitmq_dir) in line
    # The node's own output, kept for whoever wonders why.
    [output] = rabbitmq_dir.glob("*/output.log")
    assert "broken on purpose" in output.read_text()


def test_with_a_broker_make_run_runs_the_daemon_as_before(tmp_path):
    directory = tmp_path / "etc"
    directory.mkdir()
    make_config(directory, test_broker(host=BROKER_HOST, port=BROKER_PORT))
    run = MakeRun(tmp_path, directory / "notifications.toml", tmp_path / "rabbitmq")
    try:
        run.wait_health(connected=True, timeout=30)
        # make's child is the daemon itself: the check replaced itself with it.
        children = [pid for pid in descendants(run.process.pid) if process_name(pid) != "make"]
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") for pid in children]
        assert len(children) == 1, commands
        assert any(part.endswith(b"/twistd") for part in commands[0]), commands
    finally:
        run.stop()
    assert not (tmp_path / "rabbitmq").exists()
    assert "private RabbitMQ node" not in run.output()
    assert "apt-get install" not in run.output()
