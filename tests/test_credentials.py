"""The credentials file as ``notifications door`` edits it, and the rotation of secrets.

In-process: the commands' edits (all or nothing: a refused edit leaves the
file byte for byte as it was), the entry format of a rotation (previous
secret and its expiry) and the gates accepting the previous secret until its
expiry, on a clock of the test's own. The commands against a running daemon
are in ``tests/test_doors.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import stat
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from notifications.cli import main
from notifications.commands.doors import diagnose
from notifications.config import load_config
from notifications.credentials import (
    CredentialsFile,
    Service,
    check_door_name,
    describe_previous_secrets,
    format_credentials,
    load_services,
    parse_expiry,
)
from notifications.errors import ConfigError
from notifications.gates import GateCall, GateError, make_gates
from notifications.web import config_report
from tests.conftest import make_config, test_broker

OLD = "old-secret-0000"
NEW = "new-secret-1111"
EXPIRES = "2030-01-01T00:00:00Z"
EXPIRY = parse_expiry(EXPIRES)

SERVICES = [
    {"gate": "Jenkins", "door": "Open"},
    {"gate": "GitHub", "door": "Acme", "secret": "acme-github-secret"},
    {
        "gate": "Phabricator",
        "door": "Acme",
        "instance": "https://phabricator.acme.test",
        "secret": "api-token",
    },
    {"gate": "Notification", "door": "Deploys", "secret_env": "DEPLOYS_TOKEN"},
]


@pytest.fixture(autouse=True)
def deploys_token(monkeypatch):
    """The variable of the ``secret_env`` entry, as the daemon's environment would have it."""
    monkeypatch.setenv("DEPLOYS_TOKEN", "deploys-token")


def setup(directory: Path, services=None, raw: bytes | None = None) -> Path:
    """A configuration folder; its credentials file holds ``services`` (default
    :data:`SERVICES`), or ``raw`` when given."""
    make_config(directory, test_broker())
    credentials = directory / "credentials.json"
    if raw is None:
        raw = json.dumps({"services": SERVICES if services is None else services}).encode()
    credentials.write_bytes(raw)
    return credentials


def run(capsys, directory: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["--config", str(directory / "notifications.toml"), *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def state(path: Path) -> tuple[bytes, int, int]:
    info = path.stat()
    return path.read_bytes(), stat.S_IMODE(info.st_mode), info.st_ino


# door add, list, remove, rotate: what they write ----------------------------------------


def test_door_add_appends_an_entry_and_keeps_the_others(tmp_path, capsys):
    # A hand-written file, mode 0640: the other entries keep their order, keys and values.
    raw = (
        b'{"services":[{"door":"Open","gate":"Jenkins"},\n'
        b'  {"gate":"GitHub","door":"Acme","secret":"acme-github-secret"}]}'
    )
    credentials = setup(tmp_path, raw=raw)
    credentials.chmod(0o640)
    code, out, err = run(capsys, tmp_path, "door", "add", "github", "Widgets")
    assert (code, err) == (0, "")
    document = json.loads(credentials.read_text())
    assert document["services"][:2] == json.loads(raw)["services"]
    assert [list(entry) for entry in document["services"][:2]] == [
        ["door", "gate"],
        ["gate", "door", "secret"],
    ]
    [entry] = document["services"][2:]
    assert list(entry) == ["gate", "door", "secret"]
    assert (entry["gate"], entry["door"]) == ("GitHub", "Widgets")
    assert re.fullmatch(r"[0-9a-f]{64}", entry["secret"])
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o640
    # One entry per line, and the daemon reads it.
    assert credentials.read_bytes() == format_credentials(document)
    assert load_config(tmp_path / "notifications.toml").service("GitHub", "Widgets")

    # What to paste on GitHub, the secret printed once; no daemon runs: one line, exit 0.
    lines = out.splitlines()
    assert f"No daemon runs on {tmp_path / 'var'}: it reads the change when it starts." in lines
    placeholder = "https://<public address of the center: set [gate] public_url>"
    assert f"  Payload URL:       {placeholder}/gate/GitHub/Widgets" in lines
    assert "  Content type:      application/json" in lines
    assert "  Which events:      Send me everything." in lines
    assert f"  Secret:            {entry['secret']}" in lines
    assert out.count(entry["secret"]) == 1
    assert not list(tmp_path.glob(".credentials.json.*")), "a temporary file was left"


def test_door_add_prints_the_public_url_and_each_gates_own_rules(tmp_path, capsys):
    setup(tmp_path)
    toml = tmp_path / "notifications.toml"
    toml.write_text(
        toml.read_text().replace("[gate]\n", '[gate]\npublic_url = "https://n.acme.test/"\n')
    )
    code, out, _ = run(capsys, tmp_path, "door", "add", "Jenkins", "Build")
    assert code == 0
    secret = json.loads((tmp_path / "credentials.json").read_text())["services"][-1]["secret"]
    assert f"  URL:           https://n.acme.test/gate/Jenkins/Build?token={secret}" in out
    assert "the header Authorization: Bearer <token>" in out
    assert out.count(secret) == 1

    code, out, _ = run(
        capsys, tmp_path, "door", "add", "Notification", "Ops Ünï", "--public-url", "http://x.test"
    )
    assert code == 2  # a space in a door name
    code, out, _ = run(
        capsys, tmp_path, "door", "add", "Notification", "Ünï", "--public-url", "http://x.test"
    )
    assert code == 0
    assert "http://x.test/gate/Notification/%C3%9Cn%C3%AF?token=" in out


def test_door_add_with_a_secret_file(tmp_path, capsys):
    credentials = setup(tmp_path)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    code, out, err = run(
        capsys, tmp_path, "door", "add", "DockerHub", "Acme", "--secret-file", str(secrets / "hub")
    )
    assert (code, err) == (0, "")
    entry = json.loads(credentials.read_text())["services"][-1]
    assert entry == {"gate": "DockerHub", "door": "Acme", "secret_file": "secrets/hub"}
    secret = (secrets / "hub").read_text()
    assert re.fullmatch(r"[0-9a-f]{64}\n", secret)
    assert stat.S_IMODE((secrets / "hub").stat().st_mode) == 0o600
    assert secret.strip() not in credentials.read_text()
    assert out.count(secret.strip()) == 1  # shown once, in the URL
    assert load_config(tmp_path / "notifications.toml").service("DockerHub", "Acme").secret == (
        secret.strip()
    )

    # An existing file is never overwritten, and then nothing is written at all.
    before = state(credentials)
    code, _, err = run(
        capsys, tmp_path, "door", "add", "Jenkins", "Acme", "--secret-file", str(secrets / "hub")
    )
    assert code == 2
    assert "exists: give the path of a new file" in err
    assert state(credentials) == before
    assert (secrets / "hub").read_text() == secret


def test_door_add_phabricator(tmp_path, capsys):
    credentials = setup(tmp_path, services=[])
    (tmp_path / "conduit").write_text("api-abc\n")
    (tmp_path / "herald").write_text("herald-key\n")
    code, _, err = run(capsys, tmp_path, "door", "add", "Phabricator", "Acme")
    assert code == 2
    assert "needs --instance" in err
    code, out, err = run(
        capsys,
        tmp_path,
        "door",
        "add",
        "Phabricator",
        "Acme",
        "--instance",
        "https://phabricator.acme.test",
        "--api-token-file",
        str(tmp_path / "conduit"),
        "--hmac-key-file",
        str(tmp_path / "herald"),
    )
    assert (code, err) == (0, "")
    [entry] = json.loads(credentials.read_text())["services"]
    assert entry == {
        "gate": "Phabricator",
        "door": "Acme",
        "instance": "https://phabricator.acme.test",
        "secret_file": "conduit",
        "hmac_key_file": "herald",
    }
    assert "feed.http-hooks" in out
    assert "api-abc" not in out and "herald-key" not in out
    service = load_config(tmp_path / "notifications.toml").service("Phabricator", "Acme")
    assert (service.secret, service.hmac_key) == ("api-abc", "herald-key")


def test_door_list_says_where_secrets_come_from_and_never_shows_one(tmp_path, capsys):
    services = [
        *SERVICES,
        {"gate": "DockerHub", "door": "Files", "secret_file": "hub-secret"},
        {
            "gate": "Jenkins",
            "door": "Rotating",
            "secret": NEW,
            "previous_secret": OLD,
            "previous_secret_expires": EXPIRES,
        },
        {
            "gate": "GitHub",
            "door": "Rotated",
            "secret": NEW,
            "previous_secret": OLD,
            "previous_secret_expires": "2001-01-01T00:00:00Z",
        },
    ]
    (tmp_path / "hub-secret").write_text("hub-secret-value\n")
    setup(tmp_path, services=services)
    code, out, err = run(capsys, tmp_path, "door", "list")
    assert (code, err) == (0, "")
    rows = {tuple(re.split(r" {2,}", line.strip())[:2]): line for line in out.splitlines()}
    assert re.split(r" {2,}", rows[("GitHub", "Acme")].strip())[3:] == ["credentials.json", "-"]
    assert "secret_env DEPLOYS_TOKEN" in rows[("Notification", "Deploys")]
    assert "secret_file hub-secret" in rows[("DockerHub", "Files")]
    assert "none" in rows[("Jenkins", "Open")]
    assert "credentials.json; hmac_key: none" in rows[("Phabricator", "Acme")]
    assert f"previous secret accepted until {EXPIRES}" in rows[("Jenkins", "Rotating")]
    assert "previous secret expired at 2001-01-01T00:00:00Z" in rows[("GitHub", "Rotated")]
    for secret in (OLD, NEW, "acme-github-secret", "api-token", "hub-secret-value"):
        assert secret not in out


def test_door_remove(tmp_path, capsys, monkeypatch):
    credentials = setup(tmp_path)
    # The daemon's variables need not be set in the shell that edits its file.
    monkeypatch.delenv("DEPLOYS_TOKEN")
    code, out, err = run(capsys, tmp_path, "door", "remove", "GITHUB", "Acme")
    assert (code, err) == (0, "")
    assert "Removed the GitHub door Acme" in out
    assert json.loads(credentials.read_text())["services"] == [
        entry for entry in SERVICES if entry["gate"] != "GitHub"
    ]
    before = state(credentials)
    code, _, err = run(capsys, tmp_path, "door", "remove", "GitHub", "Acme")
    assert code == 1
    assert err == f"notifications: no GitHub door Acme in {credentials}\n"
    assert state(credentials) == before


def test_door_rotate_keeps_the_previous_secret_until_the_grace_ends(tmp_path, capsys):
    credentials = setup(tmp_path)
    code, out, err = run(capsys, tmp_path, "door", "rotate", "GitHub", "Acme", "--grace", "2h")
    assert (code, err) == (0, "")
    entry = json.loads(credentials.read_text())["services"][1]
    assert list(entry) == ["gate", "door", "secret", "previous_secret", "previous_secret_expires"]
    assert entry["previous_secret"] == "acme-github-secret"
    assert re.fullmatch(r"[0-9a-f]{64}", entry["secret"])
    assert f"The previous secret is accepted until {entry['previous_secret_expires']}" in out
    assert f"  Secret:            {entry['secret']}" in out
    assert "acme-github-secret" not in out
    service = load_config(tmp_path / "notifications.toml").service("GitHub", "Acme")
    expires = parse_expiry(entry["previous_secret_expires"])
    assert service.previous_secret_expires == expires
    assert service.secrets(expires - 1) == (entry["secret"], "acme-github-secret")
    assert service.secrets(expires) == (entry["secret"],)

    # Again during the grace period: refused, unless forced (the older previous one goes).
    before = state(credentials)
    code, _, err = run(capsys, tmp_path, "door", "rotate", "GitHub", "Acme")
    assert code == 1
    assert "is accepted until" in err and "--force" in err
    assert state(credentials) == before
    code, _, _ = run(capsys, tmp_path, "door", "rotate", "GitHub", "Acme", "--force")
    assert code == 0
    again = json.loads(credentials.read_text())["services"][1]
    assert again["previous_secret"] == entry["secret"]


def test_door_rotate_a_secret_file(tmp_path, capsys):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "jenkins").write_text(OLD + "\n")
    (tmp_path / "keys" / "jenkins").chmod(0o640)
    credentials = setup(
        tmp_path, services=[{"gate": "Jenkins", "door": "Acme", "secret_file": "keys/jenkins"}]
    )
    code, _, err = run(capsys, tmp_path, "door", "rotate", "Jenkins", "Acme", "--grace", "90m")
    assert (code, err) == (0, "")
    [entry] = json.loads(credentials.read_text())["services"]
    assert entry["secret_file"] == "keys/jenkins"
    assert entry["previous_secret_file"] == "keys/jenkins.previous"
    assert OLD not in credentials.read_text()
    assert (tmp_path / "keys" / "jenkins.previous").read_text() == OLD + "\n"
    assert stat.S_IMODE((tmp_path / "keys" / "jenkins.previous").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys" / "jenkins").stat().st_mode) == 0o640
    new = (tmp_path / "keys" / "jenkins").read_text().strip()
    service = load_config(tmp_path / "notifications.toml").service("Jenkins", "Acme")
    assert (service.secret, service.previous_secret) == (new, OLD)


def test_door_rotate_refuses_what_it_cannot_rotate(tmp_path, capsys):
    credentials = setup(tmp_path)
    before = state(credentials)
    for argv, message in [
        (("Notification", "Deploys"), "comes from the variable DEPLOYS_TOKEN"),
        (("Jenkins", "Open"), "this door has no secret"),
        (("Phabricator", "Acme"), "give the new one with --hmac-key-file"),
        (
            ("GitHub", "Acme", "--hmac-key-file", "x"),
            "--hmac-key-file is for the doors whose sender makes the key (Phabricator)",
        ),
        (("GitHub", "Nope"), "no GitHub door Nope"),
    ]:
        code, _, err = run(capsys, tmp_path, "door", "rotate", *argv)
        assert code != 0, argv
        assert message in err, (argv, err)
        assert state(credentials) == before, argv
    code, _, err = run(capsys, tmp_path, "door", "rotate", "GitHub", "Acme", "--grace", "soon")
    assert code == 2
    assert "not a duration" in err


def test_door_rotate_a_herald_key(tmp_path, capsys):
    credentials = setup(tmp_path, services=[{**SERVICES[2], "hmac_key": OLD}])
    (tmp_path / "herald-new").write_text(NEW + "\n")
    code, out, err = run(
        capsys,
        tmp_path,
        "door",
        "rotate",
        "Phabricator",
        "Acme",
        "--hmac-key-file",
        str(tmp_path / "herald-new"),
    )
    assert (code, err) == (0, "")
    [entry] = json.loads(credentials.read_text())["services"]
    assert entry["previous_hmac_key"] == OLD
    assert entry["hmac_key_file"] == "herald-new"
    assert "hmac_key" not in entry
    service = load_config(tmp_path / "notifications.toml").service("Phabricator", "Acme")
    assert service.hmac_keys(service.previous_hmac_key_expires - 1) == (NEW, OLD)
    assert NEW not in out and OLD not in out


# Refusals leave the file byte for byte as it was ---------------------------------------


@pytest.mark.parametrize(
    "door",
    [
        "a/b",
        "a.b",
        "a b",
        "a?b",
        "a#b",
        "a%2F",
        "a*",
        "tab\there",
        "nul\x00",
        "del\x7f",
        "..",
        "x" * 101,
        "é" * 51,
        "",
    ],
)
def test_door_add_refuses_a_door_name_that_cannot_be_one(tmp_path, capsys, door):
    credentials = setup(tmp_path)
    before = state(credentials)
    code, out, err = run(capsys, tmp_path, "door", "add", "GitHub", door)
    assert code == 2
    assert out == ""
    assert err.startswith("notifications: ") and err.count("\n") == 1, err
    assert state(credentials) == before


def test_door_names_that_are_fine():
    for door in ("Acme", "acme-corp", "Acme_2", "Ünïcode", "a" * 100, "x:y", "ö" * 50):
        check_door_name(door)


def test_door_add_refusals_leave_the_file_unchanged(tmp_path, capsys):
    credentials = setup(tmp_path)
    before = state(credentials)
    for argv, code, message in [
        (("Gitlab", "Acme"), 2, "unknown gate 'Gitlab' (one of Notification, DockerHub, GitHub"),
        (("GitHub", "Acme"), 1, f"the GitHub door Acme already exists in {credentials}"),
        (
            ("Jenkins", "Acme", "--instance", "https://x.test"),
            2,
            "--instance is not for Jenkins doors",
        ),
    ]:
        result = run(capsys, tmp_path, "door", "add", *argv)
        assert result[0] == code, (argv, result)
        assert result[2].startswith(f"notifications: {message}")
        assert result[2].count("\n") == 1
        assert state(credentials) == before


def test_a_read_only_file_is_refused(tmp_path, capsys):
    credentials = setup(tmp_path)
    credentials.chmod(0o444)
    before = state(credentials)
    for argv in (
        ("add", "GitHub", "New"),
        ("remove", "GitHub", "Acme"),
        ("rotate", "GitHub", "Acme"),
    ):
        code, _, err = run(capsys, tmp_path, "door", *argv)
        assert code == 1
        assert err == (
            f"notifications: {credentials} is read-only (mode 0444): make it writable to edit "
            "it with this command\n"
        )
        assert state(credentials) == before


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"services": [{"gate": "GitHub", "door": "Acme",}]}', "invalid JSON"),
        (b'{"services": [', "invalid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"services": [{"gate": "GitHub", "door": "Acme", "secert": "x"}]}', "unknown key"),
        (b'{"services": {}}', 'expected an object with a "services" list'),
        (
            b'{"services": [{"gate": "GitHub", "door": "A", "previous_secret": "x"}]}',
            "previous_secret needs previous_secret_expires",
        ),
    ],
)
def test_a_malformed_file_is_refused(tmp_path, capsys, raw, message):
    credentials = setup(tmp_path, raw=raw)
    before = state(credentials)
    for argv in (("add", "GitHub", "New"), ("remove", "GitHub", "Acme"), ("list",)):
        code, _, err = run(capsys, tmp_path, "door", *argv)
        assert code == 2, argv
        assert message in err, err
        assert err.count("\n") == 1
        assert state(credentials) == before


def test_a_file_changed_by_someone_else_during_the_edit_is_left_to_them(
    tmp_path, capsys, monkeypatch
):
    """Another editor (one that takes no lock) writes the file after the command read it."""
    credentials = setup(tmp_path)
    theirs = b'{"services": [{"gate": "Jenkins", "door": "Theirs"}]}\n'

    def someone_else_writes(self) -> None:
        # A real write of the file, as an editor saving it in place would make.
        with open(self.path, "r+b") as file:
            file.write(theirs)
            file.truncate()

    monkeypatch.setattr(CredentialsFile, "before_replace", someone_else_writes)
    for argv in (("add", "GitHub", "New"), ("remove", "GitHub", "Acme")):
        credentials.write_bytes(json.dumps({"services": SERVICES}).encode())
        code, _, err = run(capsys, tmp_path, "door", *argv)
        assert code == 1, argv
        assert "was changed by someone else while this command edited it: nothing written" in err
        assert credentials.read_bytes() == theirs
        assert not list(tmp_path.glob(".credentials.json.*"))

    # Replaced by another file (an editor that writes a new file and renames it).
    def someone_else_replaces(self) -> None:
        other = self.path.with_name("other.json")
        other.write_bytes(self.snapshot.data)
        os.replace(other, self.path)

    monkeypatch.setattr(CredentialsFile, "before_replace", someone_else_replaces)
    credentials.write_bytes(json.dumps({"services": SERVICES}).encode())
    before = credentials.read_bytes()
    code, _, err = run(capsys, tmp_path, "door", "add", "GitHub", "New")
    assert code == 1
    assert "changed by someone else" in err
    assert credentials.read_bytes() == before


def test_a_secret_file_is_not_left_behind_when_the_edit_is_refused(tmp_path, capsys, monkeypatch):
    credentials = setup(tmp_path)

    def someone_else_writes(self) -> None:
        self.path.write_bytes(self.snapshot.data + b" ")

    monkeypatch.setattr(CredentialsFile, "before_replace", someone_else_writes)
    code, _, _ = run(
        capsys, tmp_path, "door", "add", "Jenkins", "New", "--secret-file", str(tmp_path / "new")
    )
    assert code == 1
    assert not (tmp_path / "new").exists()
    assert b'"New"' not in credentials.read_bytes()


def test_no_credentials_file_configured(tmp_path, capsys):
    setup(tmp_path)
    toml = tmp_path / "notifications.toml"
    toml.write_text(toml.read_text().replace('credentials = "credentials.json"\n', ""))
    code, _, err = run(capsys, tmp_path, "door", "add", "GitHub", "New")
    assert code == 2
    assert "names no credentials file" in err


# The entry format of a rotation ------------------------------------------------------


def credentials_with(tmp_path: Path, entry: dict) -> Path:
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"services": [entry]}))
    return path


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"gate": "GitHub", "door": "A", "secret": NEW, "previous_secret": OLD},
            "previous_secret needs previous_secret_expires",
        ),
        (
            {"gate": "GitHub", "door": "A", "secret": NEW, "previous_secret_expires": EXPIRES},
            "previous_secret_expires without previous_secret",
        ),
        (
            {
                "gate": "GitHub",
                "door": "A",
                "secret": NEW,
                "previous_secret": OLD,
                "previous_secret_expires": "tomorrow",
            },
            "previous_secret_expires must be a time such as 2026-12-08T10:00:00Z",
        ),
        (
            {
                "gate": "GitHub",
                "door": "A",
                "secret": NEW,
                "previous_secret": OLD,
                "previous_secret_expires": "2030-01-01T00:00:00",
            },
            "no time zone",
        ),
        (
            {
                "gate": "GitHub",
                "door": "A",
                "secret": NEW,
                "previous_secret": OLD,
                "previous_secret_expires": 1893456000,
            },
            "previous_secret_expires must be a time",
        ),
        (
            {"gate": "GitHub", "door": "A", "secret": NEW, "previous_hmac_key": OLD},
            "unknown key 'previous_hmac_key' (expected door, gate, instance, previous_secret,",
        ),
        (
            {"gate": "GitHub", "door": "A", "previous_secret_env": "X"},
            "unknown key 'previous_secret_env'",
        ),
    ],
)
def test_rotation_keys_are_checked(tmp_path, entry, message):
    with pytest.raises(ConfigError) as caught:
        load_services(credentials_with(tmp_path, entry), environ={})
    assert message in str(caught.value)


def test_the_older_format_stays_valid_and_previous_keys_are_read(tmp_path):
    [service] = load_services(
        credentials_with(tmp_path, {"gate": "GitHub", "door": "A", "secret": NEW}), environ={}
    )
    assert (service.previous_secret, service.previous_secret_expires) == (None, None)
    assert service.secrets(0) == (NEW,)
    (tmp_path / "previous").write_text(OLD + "\n")
    entry = {
        "gate": "GitHub",
        "door": "A",
        "secret": NEW,
        "previous_secret_file": "previous",
        "previous_secret_expires": "2030-01-01T01:00:00+01:00",
    }
    [service] = load_services(credentials_with(tmp_path, entry), environ={})
    assert service.previous_secret == OLD
    assert service.previous_secret_expires == EXPIRY
    assert OLD not in repr(service)
    # A previous secret alone does not make a door signed.
    assert service.__class__(gate="GitHub", door="A", previous_secret=OLD).secrets(0) == ()


def test_config_and_config_show_never_show_rotation_keys(tmp_path, capsys):
    services = [
        {
            "gate": "GitHub",
            "door": "Acme",
            "secret": NEW,
            "previous_secret": OLD,
            "previous_secret_expires": EXPIRES,
        }
    ]
    config = make_config(tmp_path, test_broker(), services=services)
    report = json.dumps(config_report(config, lambda service: ""))
    assert OLD not in report and NEW not in report and "previous" not in report
    code, out, _ = run(capsys, tmp_path, "config", "show")
    assert code == 0
    assert OLD not in out and NEW not in out and "previous" not in out


# The gates accept the previous secret until it expires, on the reactor's clock --------


def rotating_config(tmp_path: Path):
    services = [
        {
            "gate": gate,
            "door": "Acme",
            "secret": NEW,
            "previous_secret": OLD,
            "previous_secret_expires": EXPIRES,
        }
        for gate in ("GitHub", "Jenkins", "Notification", "DockerHub")
    ]
    services.append(
        {
            "gate": "Phabricator",
            "door": "Acme",
            "instance": "https://phabricator.acme.test",
            "hmac_key": NEW,
            "previous_hmac_key": OLD,
            "previous_hmac_key_expires": EXPIRES,
        }
    )
    return make_config(tmp_path, test_broker(), services=services)


def github_call(
    secret: str, algorithm=hashlib.sha256, header="x-hub-signature-256", prefix="sha256="
):
    body = json.dumps({"zen": "Design for failure.", "hook_id": 1}).encode()
    signature = prefix + hmac.new(secret.encode(), body, algorithm).hexdigest()
    headers = {
        "content-type": "application/json",
        "x-github-event": "ping",
        "x-github-delivery": "d-1",
        header: signature,
    }
    return GateCall(door="Acme", headers=headers, body=body)


def token_call(secret: str, how: str, payload: dict | None = None) -> GateCall:
    body = json.dumps(payload or {"service": "S", "group": "g", "type": "t"}).encode()
    if how == "query":
        return GateCall(door="Acme", headers={}, body=body, query={"token": secret})
    return GateCall(door="Acme", headers={"authorization": f"Bearer {secret}"}, body=body)


def herald_call(key: str) -> GateCall:
    body = json.dumps({"object": {"phid": "PHID-TASK-1", "type": "TASK"}}).encode()
    signature = hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    headers = {"content-type": "application/json", "x-phabricator-webhook-signature": signature}
    return GateCall(door="Acme", headers=headers, body=body)


def outcome_status(gate, call) -> int:
    try:
        result = gate.process(call)
    except GateError as error:
        return error.status
    return 200 if result is not None else 0


def test_the_previous_secret_works_until_its_expiry_without_a_reload(tmp_path):
    config = rotating_config(tmp_path)
    clock = Clock()
    clock.advance(EXPIRY - 10)
    gates = make_gates(config, clock=clock)
    calls = {
        "GitHub sha256": (gates["GitHub"], lambda secret: github_call(secret)),
        "GitHub sha1": (
            gates["GitHub"],
            lambda secret: github_call(secret, hashlib.sha1, "x-hub-signature", "sha1="),
        ),
        "Notification ?token=": (gates["Notification"], lambda secret: token_call(secret, "query")),
        "Jenkins Bearer": (
            gates["Jenkins"],
            lambda secret: token_call(
                secret, "bearer", {"name": "j", "build": {"phase": "STARTED"}}
            ),
        ),
        "Notification Bearer": (
            gates["Notification"],
            lambda secret: token_call(secret, "bearer"),
        ),
        "Herald": (gates["Phabricator"], herald_call),
    }
    for name, (gate, make) in calls.items():
        assert outcome_status(gate, make(NEW)) == 200, name
        assert outcome_status(gate, make(OLD)) == 200, name
        assert outcome_status(gate, make("neither")) == 403, name
    clock.advance(10)  # the expiry: the previous secret is refused, the new one accepted
    for name, (gate, make) in calls.items():
        assert outcome_status(gate, make(NEW)) == 200, name
        assert outcome_status(gate, make(OLD)) == 403, name


@pytest.mark.parametrize(
    ("value", "result"),
    [
        ("https://n.acme.test/", "https://n.acme.test"),
        ("http://127.0.0.1:8080/center", "http://127.0.0.1:8080/center"),
        ("ftp://n.acme.test", None),
        ("https://n.acme.test/?x=1", None),
        ("n.acme.test", None),
    ],
)
def test_public_url(tmp_path, value, result):
    make_config(tmp_path, test_broker())
    toml = tmp_path / "notifications.toml"
    toml.write_text(toml.read_text().replace("[gate]\n", f'[gate]\npublic_url = "{value}"\n'))
    if result is None:
        with pytest.raises(ConfigError) as caught:
            load_config(toml)
        assert "[gate] public_url: " in str(caught.value)
    else:
        assert load_config(toml).public_url == result


def test_the_logs_say_which_previous_secrets_are_accepted():
    services = (
        Service("GitHub", "Acme", secret=NEW, previous_secret=OLD, previous_secret_expires=EXPIRY),
        Service(
            "Phabricator",
            "Acme",
            instance="https://p.test",
            hmac_key=NEW,
            previous_hmac_key=OLD,
            previous_hmac_key_expires=EXPIRY - 7200,
        ),
        Service("Jenkins", "Acme", secret=NEW),
    )
    assert describe_previous_secrets(services, EXPIRY - 3600) == [
        f"GitHub/Acme previous secret accepted until {EXPIRES}",
        "Phabricator/Acme previous hmac_key expired at 2029-12-31T22:00:00Z",
    ]
    assert OLD not in repr(services) and NEW not in repr(services)


@pytest.mark.parametrize(
    ("status", "body", "said"),
    [
        (
            400,
            b"Bad request.\nservice must be a non-empty string\n",
            "400: the daemon found the call invalid: service must be a non-empty string",
        ),
        (
            503,
            b"Too many calls in progress, retry later.\n",
            "503: the daemon is not taking calls now: Too many calls in progress, retry later.",
        ),
        (
            404,
            b"<html>No Such Resource</html>",
            "404: no gate at this URL: is it the daemon's public port, and its Gate feature on?",
        ),
        (500, b"Internal error.\n", "500: the daemon failed on the call: see its log"),
        (
            403,
            b"Unauthorized action.\nmissing or wrong door token\n",
            "403: the daemon's "
            "Notification door Acme requires a secret that the credentials file does not give it",
        ),
    ],
)
def test_door_check_diagnoses(tmp_path, status, body, said):
    config = make_config(tmp_path, test_broker())
    assert diagnose(config, "Notification", "Acme", None, status, body).startswith(said)
