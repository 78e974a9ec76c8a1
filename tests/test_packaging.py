"""Packaging: the systemd units, the Dockerfile, the Salt state and ``pip install``.

Fast checks, none of them on the network: the units parse and start the
daemon on a socket passed as systemd passes it; the example configurations
load; the Dockerfile copies only files that exist and its image's
configuration loads; the Salt templates render with the pillar example into a
configuration that loads (skipped without jinja2 and PyYAML, which the project
does not depend on); the package carries the console script and the twistd
plugin.
"""

from __future__ import annotations

import configparser
import copy
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.scripts.twistd import ServerOptions

from notifications.config import Config, load_config, validate_files
from tests.processes import free_port, http_status

ROOT = Path(__file__).resolve().parent.parent
ETC = ROOT / "etc"
SYSTEMD = ETC / "systemd"
SALT = ETC / "salt"
DOCKERFILE = ROOT / "Dockerfile"
SYSTEMD_ENDPOINT = "systemd:domain=INET:index=0"


# Units ----------------------------------------------------------------------


def unit_directives(path: Path, text: str | None = None) -> dict[str, list[tuple[str, str]]]:
    """The ``Key=value`` lines of a unit file, by section, repeated keys kept in order."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in (path.read_text() if text is None else text).splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path}: {line!r} outside a section"
        key, separator, value = line.partition("=")
        assert separator, f"{path}: {line!r} is not Key=value"
        current.append((key.strip(), value.strip()))
    return sections


def unit_parser(path: Path) -> configparser.ConfigParser:
    """The unit read by ``configparser``, as loosely as systemd reads it."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text(), source=str(path))
    return parser


def twistd_options(argv: list[str], config: Path) -> ServerOptions:
    """``twistd``'s own parsing of a command line, with the configuration replaced by ``config``."""
    argv = list(argv)
    argv[argv.index("--config") + 1] = str(config)
    options = ServerOptions()
    options.parseOptions(argv[1:])
    return options


def test_the_units_parse():
    for name in ("notifications.socket", "notifications.service"):
        parser = unit_parser(SYSTEMD / name)
        assert "Unit" in parser and "Install" in parser, name
        assert unit_directives(SYSTEMD / name)  # every line is Key=value in a section
    assert unit_parser(SYSTEMD / "notifications.socket")["Socket"]["ListenStream"]


def test_the_service_runs_the_plugin_on_the_systemd_socket():
    service = unit_parser(SYSTEMD / "notifications.service")["Service"]
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0]).name == "twistd"
    assert "--nodaemon" in argv and "--pidfile=" in argv
    assert f"--port {SYSTEMD_ENDPOINT}" in service["ExecStart"]
    # an absolute configuration: its relative paths then resolve in its folder
    assert Path(argv[argv.index("--config") + 1]).is_absolute()
    plugins = {plugin.tapname: plugin for plugin in getPlugins(IServiceMaker)}
    assert "notifications" in plugins
    assert plugins["notifications"].module == "notifications.tap"

    options = twistd_options(argv, ETC / "notifications.toml")
    assert options.subCommand == "notifications"
    assert options["nodaemon"] and not options["pidfile"]
    assert options.subOptions["ports"] == [SYSTEMD_ENDPOINT]


def test_the_socket_matches_the_endpoint():
    socket_unit = dict(unit_directives(SYSTEMD / "notifications.socket")["Socket"])
    service = dict(unit_directives(SYSTEMD / "notifications.service")["Unit"])
    listen = socket_unit["ListenStream"]
    # domain=INET needs an IPv4 address: a bare port or [::] is an IPv6 socket
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+:\d+", listen), listen
    assert socket_unit.get("Accept", "no") == "no"
    assert "notifications.socket" in service.get("Requires", "")


def test_the_service_outlasts_the_drain():
    directives = unit_directives(SYSTEMD / "notifications.service")
    service = dict(directives["Service"])
    assert service["KillSignal"] == "SIGTERM"
    drain = Config(path=Path("notifications.toml")).drain_timeout
    assert float(service["TimeoutStopSec"]) > drain
    assert service["Restart"] == "on-failure"
    assert service["User"] == "notifications"
    assert service["StateDirectory"] == "notifications"
    assert service["WorkingDirectory"] == "/var/lib/notifications"
    assert service["EnvironmentFile"] == "-/etc/notifications/environment"
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert service[key] == "yes", key
    assert service["ProtectSystem"] == "strict"
    assert "/var/lib/notifications" in service["ReadWritePaths"].split()
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}


#: Passes the listening socket as systemd does: on descriptor 3, with
#: LISTEN_PID (the daemon's own pid, kept by exec), LISTEN_FDS and LISTEN_FDNAMES.
SOCKET_ACTIVATION = """
import os, sys
descriptor, name, program = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.dup2(descriptor, 3)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES=name)
os.execv(program, sys.argv[3:])
"""


def test_the_service_serves_on_a_socket_passed_as_systemd_passes_it(tmp_path):
    """The unit's ExecStart, on a socket handed over as systemd hands it, then SIGTERM.

    Its program is this environment's twistd and its configuration the test's
    own (no broker there: the daemon serves /status all the same).
    """
    service = dict(unit_directives(SYSTEMD / "notifications.service")["Service"])
    socket_unit = dict(unit_directives(SYSTEMD / "notifications.socket")["Socket"])
    argv = shlex.split(service["ExecStart"])
    argv[0] = str(Path(sys.executable).parent / "twistd")
    config = tmp_path / "notifications.toml"
    config.write_text(
        f'[broker]\nhost = "127.0.0.1"\nport = {free_port()}\n'
        f'[storage]\ndirectory = "{tmp_path / "var"}"\n'
    )
    argv[argv.index("--config") + 1] = str(config)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("BROKER_")}
    environment["PYTHONUNBUFFERED"] = "1"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        name = socket_unit.get("FileDescriptorName", "notifications.socket")
        process = subprocess.Popen(
            [sys.executable, "-c", SOCKET_ACTIVATION, str(listener.fileno()), name, *argv],
            pass_fds=(listener.fileno(),),
            cwd=tmp_path,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            answer = http_status(port, process=process)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                output, _ = process.communicate(timeout=float(service["TimeoutStopSec"]))
            except subprocess.TimeoutExpired:
                process.kill()
                output, _ = process.communicate()
                pytest.fail(f"twistd outlived TimeoutStopSec after SIGTERM:\n{output}")
    assert answer.startswith(b"HTTP/1.0 200 ") and answer.endswith(b"\r\n\r\nALIVE"), output
    # twistd ends by the signal it was stopped with, which systemd counts as a clean stop
    assert process.returncode == -signal.SIGTERM, output
    assert "Traceback" not in output, output


# Configurations ---------------------------------------------------------------


def test_the_example_configuration_loads():
    config = load_config(ETC / "notifications.toml", environ={})
    assert config.services
    assert validate_files(ETC / "notifications.toml", environ={}) == []


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            instructions.append((instruction.upper(), arguments.strip()))
    return instructions


def dockerfile_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not ``--from``)."""
    copies = []
    for instruction, arguments in dockerfile_instructions():
        if instruction != "COPY":
            continue
        words = shlex.split(arguments)
        if any(word.startswith("--from") for word in words):
            continue
        words = [word for word in words if not word.startswith("--")]
        copies.append((words[:-1], words[-1]))
    return copies


def build_from_dockerfile(root: Path) -> None:
    """Lay out under ``root`` the files each context COPY puts in the image."""
    workdir = "/"
    for instruction, arguments in dockerfile_instructions():
        if instruction == "FROM":
            workdir = "/"
        elif instruction == "WORKDIR":
            workdir = arguments
        elif instruction == "COPY" and "--from" not in arguments:
            words = [word for word in shlex.split(arguments) if not word.startswith("--")]
            sources, destination = words[:-1], words[-1]
            target = root / os.path.join(workdir, destination).lstrip("/")
            for source in sources:
                path = ROOT / source
                if path.is_dir():
                    shutil.copytree(path, target, dirs_exist_ok=True)
                elif destination.endswith("/"):
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, target / path.name)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, target)


def test_the_dockerfile_copies_only_what_exists_and_dockerignore_lets_through():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    included = [pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")]
    assert patterns[0] == "*", "the context is an allow-list"
    copies = dockerfile_copies()
    assert copies
    for sources, _ in copies:
        for source in sources:
            assert (ROOT / source).exists(), source
            source = source.rstrip("/")
            assert any(
                source == pattern or source.startswith(pattern + "/") for pattern in included
            ), f"{source} is left out of the build context by .dockerignore"


def test_the_image_configuration_loads(tmp_path):
    """The image's /etc/notifications, as the Dockerfile lays it out, and its command."""
    build_from_dockerfile(tmp_path)
    instructions = dockerfile_instructions()
    command = json.loads(next(arguments for name, arguments in instructions if name == "CMD"))
    config_path = command[command.index("--config") + 1]
    assert config_path == "/etc/notifications/notifications.toml"
    local = tmp_path / config_path.lstrip("/")
    assert local.is_file()

    config = load_config(local, environ={})
    assert config.storage_directory == Path("/var/lib/notifications")
    assert ("VOLUME", '["/var/lib/notifications"]') in instructions
    assert config.services and config.dockerhub_tokens
    assert validate_files(local, environ={}) == []
    # BROKER_HOST and the other BROKER_* variables name the broker
    assert load_config(local, environ={"BROKER_HOST": "broker.internal"}).broker.host == (
        "broker.internal"
    )
    # the stop signal lets the drain finish within docker stop's 10 s
    assert ("STOPSIGNAL", "SIGTERM") in instructions
    assert config.drain_timeout < 10

    options = twistd_options(command, local)
    assert options.subCommand == "notifications"
    assert options["nodaemon"] and not options["pidfile"]
    assert options.subOptions["ports"] == ["tcp:8080"]
    assert ("EXPOSE", "8080") in instructions
    user = next(arguments for name, arguments in instructions if name == "USER")
    assert user.split(":")[0] not in ("root", "0")


# pip install ------------------------------------------------------------------


def test_the_package_carries_the_command_and_the_plugin(tmp_path):
    """setuptools' build of the sources the Dockerfile builds from, without the network."""
    pytest.importorskip("setuptools", reason="setup.py build needs setuptools in this environment")
    source = tmp_path / "source"
    build_stage = []
    for instruction, arguments in dockerfile_instructions():
        if instruction == "FROM" and build_stage:
            break
        if instruction == "COPY":
            build_stage.append(arguments)
    assert build_stage, "the Dockerfile's first stage copies the sources"
    for arguments in build_stage:
        words = shlex.split(arguments)
        for name in words[:-1]:
            path = ROOT / name
            target = source / name.rstrip("/")
            if path.is_dir():
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)
    done = subprocess.run(
        [
            *(sys.executable, "setup.py", "-q"),
            *("build", "--build-base", str(tmp_path / "build")),
            *("egg_info", "--egg-base", str(tmp_path)),
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    built = tmp_path / "build" / "lib"
    assert (built / "twisted" / "plugins" / "notifications_plugin.py").is_file()
    # nothing that would replace Twisted's own package or plugin loader
    assert not (built / "twisted" / "__init__.py").exists()
    assert not (built / "twisted" / "plugins" / "__init__.py").exists()
    assert (built / "notifications" / "cli.py").is_file()
    assert (built / "notifications" / "static" / "index.html").is_file()
    entry_points = configparser.ConfigParser()
    entry_points.read(tmp_path / "notifications.egg-info" / "entry_points.txt")
    assert entry_points["console_scripts"]["notifications"] == "notifications.cli:main"


# Salt -------------------------------------------------------------------------


def _merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


class SaltRenderer:
    """Salt's Jinja rendering of the state's files, with ``salt['pillar.get']``."""

    def __init__(self, pillar: dict):
        jinja2 = pytest.importorskip("jinja2", reason="jinja2 renders the Salt templates")
        self.yaml = pytest.importorskip("yaml", reason="PyYAML reads the Salt states")
        self.pillar = pillar
        # Salt renders with StrictUndefined unless allow_undefined is set
        self.environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(SALT), undefined=jinja2.StrictUndefined
        )

    def pillar_get(self, key, default="", merge=False, delimiter=":"):
        value = self.pillar
        for part in key.split(delimiter):
            if not isinstance(value, dict) or part not in value:
                return default
            value = value[part]
        if merge and isinstance(default, dict) and isinstance(value, dict):
            return _merge(copy.deepcopy(default), value)
        return value

    def render(self, name: str) -> str:
        context = {"salt": {"pillar.get": self.pillar_get}, "pillar": self.pillar}
        return self.environment.get_template(name).render(**context)

    def states(self) -> dict:
        return self.yaml.safe_load(self.render("notifications/init.sls"))


def pillar_example() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML reads the pillar example")
    return yaml.safe_load((SALT / "pillar.example.sls").read_text())


def state_arguments(state: dict) -> tuple[str, dict]:
    """``('file.managed', {name: …, source: …})`` of one state as written (``file.managed:``)."""
    ((function, arguments),) = state.items()
    values = {}
    for item in arguments:
        values.update(item)
    return function, values


def test_the_salt_state_renders_with_the_pillar_example():
    states = SaltRenderer(pillar_example()).states()
    functions = {name: state_arguments(state)[0] for name, state in states.items()}
    assert functions["notifications-service"] == "service.running"
    assert functions["notifications-socket"] == "service.running"
    assert functions["notifications-validate"] == "cmd.run"
    # every requisite names a state of the file
    for name, state in states.items():
        _, arguments = state_arguments(state)
        for requisite in ("require", "watch", "onchanges"):
            for item in arguments.get(requisite, []):
                ((kind, target),) = item.items()
                assert target in states, f"{name}: {requisite} {kind}: {target}"
                assert functions[target].startswith(kind + "."), f"{name}: {item}"
    # the daemon restarts only after the configuration validated
    _, service = state_arguments(states["notifications-service"])
    assert {"cmd": "notifications-validate"} in service["require"]
    assert {"file": "notifications-config"} in service["watch"]
    _, validate = state_arguments(states["notifications-validate"])
    assert "config validate" in validate["name"]
    assert {"file": "notifications-credentials"} in validate["onchanges"]
    _, socket_state = state_arguments(states["notifications-socket"])
    assert socket_state["enable"] is True
    # secrets: root:notifications, 0640
    for name in ("notifications-config", "notifications-credentials"):
        _, arguments = state_arguments(states[name])
        assert (arguments["user"], arguments["group"], arguments["mode"]) == (
            "root",
            "notifications",
            "0640",
        )


@pytest.mark.parametrize("method", ["git", "wheel"])
def test_the_salt_state_installs_from_git_or_a_wheel(method):
    pillar = pillar_example()
    pillar["notifications"]["install"]["method"] = method
    states = SaltRenderer(pillar).states()
    function, _ = state_arguments(states["notifications-source"])
    assert function == {"git": "git.latest", "wheel": "file.managed"}[method]
    _, install = state_arguments(states["notifications-install"])
    assert "/opt/notifications/bin/pip install" in install["name"]
    assert install["name"].endswith("/opt/notifications/.notifications-installed")
    assert install["unless"].startswith("test -s ")


def test_the_salt_state_writes_a_configuration_that_loads(tmp_path):
    """The state's configuration files, written where it would write them, then loaded."""
    pillar = pillar_example()
    conf = tmp_path / "etc" / "notifications"
    pillar["notifications"]["config_dir"] = str(conf)
    renderer = SaltRenderer(pillar)
    states = renderer.states()
    written = []
    for state in states.values():
        function, arguments = state_arguments(state)
        path = Path(str(arguments.get("name", "")))
        if not path.is_relative_to(conf):
            continue
        if function == "file.serialize":
            assert arguments["serializer"] == "json"
            content = json.dumps(arguments["dataset"], indent=4)
        elif function == "file.managed":
            source = arguments["source"]
            assert source.startswith("salt://") and arguments["template"] == "jinja"
            content = renderer.render(source.removeprefix("salt://"))
        else:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        written.append(path.relative_to(conf).as_posix())
    assert {"notifications.toml", "credentials.json", "dockerhub-tokens.json", "environment"} <= (
        set(written)
    )
    assert "analyzers/GitHub/Acme.json" in written

    config = load_config(conf / "notifications.toml", environ={})
    example = pillar["notifications"]
    assert config.broker.host == example["config"]["broker"]["host"]
    assert config.storage_directory == Path("/var/lib/notifications")
    assert [(s.gate, s.door) for s in config.services] == [
        (s["gate"], s["door"]) for s in example["credentials"]["services"]
    ]
    assert config.dockerhub_tokens == example["dockerhub_tokens"]
    # lists of the pillar are arrays of tables
    assert [(c.name, list(c.patterns)) for c in config.consumers] == [
        (c["name"], c["patterns"]) for c in example["config"]["consumers"]
    ]
    assert [(s.name, s.url) for s in config.subscriptions] == [
        (s["name"], s["url"]) for s in example["config"]["subscriptions"]
    ]
    assert validate_files(conf / "notifications.toml", environ={}) == []
    # the environment file overrides the broker's settings, as systemd passes it
    environment = dict(
        line.split("=", 1)
        for line in (conf / "environment").read_text().splitlines()
        if line and not line.startswith("#")
    )
    password = example["environment"]["BROKER_PASSWORD"]
    assert environment == {"BROKER_PASSWORD": f'"{password}"'}


def test_the_salt_units_are_the_units_of_etc_systemd():
    """With the default pillar, the units Salt installs say what etc/systemd/ says."""
    renderer = SaltRenderer({})
    for name in ("notifications.socket", "notifications.service"):
        text = renderer.render(f"notifications/files/{name}.jinja")
        assert unit_directives(Path(name), text) == unit_directives(SYSTEMD / name), name


@pytest.mark.parametrize(
    ("listen", "domain"),
    [
        ("127.0.0.1:8080", "INET"),
        ("[::1]:8080", "INET6"),
        ("/run/notifications/notifications.sock", "UNIX"),
    ],
)
def test_the_salt_service_adopts_the_socket_of_its_address_family(listen, domain):
    renderer = SaltRenderer({"notifications": {"listen": listen}})
    service = renderer.render("notifications/files/notifications.service.jinja")
    socket_unit = renderer.render("notifications/files/notifications.socket.jinja")
    assert f"--port systemd:domain={domain}:index=0 " in service
    assert f"\nListenStream={listen}\n" in socket_unit
