"""Operating the daemon: admin surface, JSON logs, SIGHUP reload, secrets from outside.

The daemon runs as ``twistd`` here: signals and command-line options are
what is tested.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
from pathlib import Path

import pytest

from notifications.config import load_config
from notifications.errors import ConfigError
from tests.conftest import make_config, test_broker
from tests.processes import (
    free_port,
    http_status,
    loopback_endpoint,
    request,
    start_twistd,
    wait_until,
)


def signed(secret: str, body: bytes) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": "ping",
        "X-GitHub-Delivery": os.urandom(8).hex(),
        "X-Hub-Signature-256": f"sha256={digest}",
    }


def test_the_admin_surface_moves_to_its_own_port(tmp_path):
    make_config(tmp_path, test_broker())
    public, admin = free_port(), free_port()
    daemon = start_twistd(tmp_path, "--admin-port", loopback_endpoint(admin), port=public)
    try:
        assert http_status(public).endswith(b"ALIVE")
        assert http_status(admin).endswith(b"ALIVE")
        for path in ("/", "/config", "/health", "/metrics", "/status.json"):
            assert request(public, "GET", path)[0] == 404, path
            assert request(admin, "GET", path)[0] == 200, path
        body = json.dumps({"service": "Deployer", "group": "ops", "type": "deploy"}).encode()
        assert request(public, "POST", "/gate/Notification/Acme", body)[0] == 200
        assert request(admin, "POST", "/gate/Notification/Acme", body)[0] == 404
        # The status page on the admin port shows what the public port received.
        recent = json.loads(request(admin, "GET", "/status.json")[1])["recent"]
        assert [item["type"] for item in recent] == ["deploy"]
    finally:
        daemon.stop()


def test_json_logs_are_one_object_per_line(tmp_path):
    make_config(tmp_path, test_broker())
    daemon = start_twistd(tmp_path, "--json-logs")
    port = daemon.port
    try:
        assert http_status(port).endswith(b"ALIVE")
        request(port, "POST", "/gate/Notification/Acme", b"[]")
    finally:
        daemon.stop()
    lines = daemon.log_path.read_text().splitlines()
    events = [json.loads(line.strip("\x1e")) for line in lines if line.strip("\x1e").strip()]
    assert events, lines
    calls = [e for e in events if e.get("log_namespace") == "notifications.web.CallHandler"]
    assert len(calls) == 1
    assert calls[0]["status"] == 400
    assert calls[0]["gate"] == "Notification"
    assert len(calls[0]["request_id"]) == 16


def test_sighup_reloads_credentials_and_keeps_a_good_configuration(tmp_path):
    broker = test_broker()
    make_config(tmp_path, broker, services=[{"gate": "GitHub", "door": "Acme", "secret": "one"}])
    daemon = start_twistd(tmp_path)
    port = daemon.port
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    try:
        assert http_status(port).endswith(b"ALIVE")
        assert request(port, "POST", "/gate/GitHub/Acme", body, signed("one", body))[0] == 200
        assert request(port, "POST", "/gate/GitHub/Acme", body, signed("two", body))[0] == 403

        credentials = tmp_path / "credentials.json"
        credentials.write_text(
            json.dumps({"services": [{"gate": "GitHub", "door": "Acme", "secret": "two"}]})
        )
        daemon.signal(signal.SIGHUP)

        def reloaded() -> bool:
            return request(port, "POST", "/gate/GitHub/Acme", body, signed("two", body))[0] == 200

        wait_until(reloaded)
        assert request(port, "POST", "/gate/GitHub/Acme", body, signed("one", body))[0] == 403

        # A broken file: the daemon says why and keeps serving with the last good one.
        credentials.write_text('{"services": [{"gate": "GitHub", "door": "Acme", "secert": 1}]}')
        daemon.signal(signal.SIGHUP)
        wait_until(lambda: "Keeping the current configuration" in daemon.output())
        assert "unknown key 'secert'" in daemon.output()
        assert request(port, "POST", "/gate/GitHub/Acme", body, signed("two", body))[0] == 200
        assert daemon.poll() is None
    finally:
        daemon.stop()


# Secrets from a secret manager ----------------------------------------------------------


def write_config(tmp_path: Path, services: list[dict], toml: str = "") -> Path:
    (tmp_path / "credentials.json").write_text(json.dumps({"services": services}))
    path = tmp_path / "notifications.toml"
    path.write_text('[gate]\ncredentials = "credentials.json"\n' + toml)
    return path


def test_secrets_from_the_environment_and_from_files(tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "github").write_text("from-a-file\n")
    (secrets / "mailgun").write_text("key-from-file")
    path = write_config(
        tmp_path,
        [
            {"gate": "GitHub", "door": "Acme", "secret_file": "secrets/github"},
            {"gate": "Jenkins", "door": "Acme", "secret_env": "JENKINS_TOKEN"},
        ],
        '[broker]\npassword_env = "RABBIT_PASSWORD"\n[mailgun]\nkey_file = "secrets/mailgun"\n',
    )
    config = load_config(path, environ={"JENKINS_TOKEN": "from-env", "RABBIT_PASSWORD": "pw"})
    assert config.service("GitHub", "Acme").secret == "from-a-file"
    assert config.service("Jenkins", "Acme").secret == "from-env"
    assert config.broker.password == "pw"
    assert config.mailgun_key == "key-from-file"
    # The older deployment's variable still wins for the broker.
    config = load_config(
        path, environ={"JENKINS_TOKEN": "x", "RABBIT_PASSWORD": "pw", "BROKER_PASSWORD": "old"}
    )
    assert config.broker.password == "old"


@pytest.mark.parametrize(
    ("services", "toml", "message"),
    [
        (
            [{"gate": "GitHub", "door": "Acme", "secret_env": "NOPE"}],
            "",
            "services[0] (GitHub/Acme): environment variable NOPE is not set",
        ),
        (
            [{"gate": "GitHub", "door": "Acme", "secret_file": "missing"}],
            "",
            "services[0] (GitHub/Acme): cannot read the secret file",
        ),
        (
            [{"gate": "GitHub", "door": "Acme", "secret": "a", "secret_env": "B"}],
            "",
            "give only one of secret, secret_env",
        ),
        ([], '[broker]\npassword_file = "/nonexistent/pw"\n', "[broker]: cannot read the secret"),
        ([], '[mailgun]\nkey_env = "NOPE"\n', "[mailgun]: environment variable NOPE is not set"),
    ],
)
def test_a_missing_secret_is_a_clear_startup_error(tmp_path, services, toml, message):
    path = write_config(tmp_path, services, toml)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert message in str(caught.value)
