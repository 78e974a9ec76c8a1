"""The configuration file and the files it names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from notifications.analyzers import Analyzers, item_matches, parse_analyzer
from notifications.config import (
    BrokerConfig,
    config_path,
    load_config,
    validate_files,
)
from notifications.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "etc" / "notifications.toml"


def write(directory: Path, name: str, content) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content), "utf-8")
    return path


def minimal(directory: Path, gate: str = "", extra: str = "") -> Path:
    return write(directory, "n.toml", f"[gate]\n{gate}\n{extra}")


def test_the_example_configuration_loads():
    config = load_config(EXAMPLE, environ={})
    assert config.broker.exchange == "notifications"
    assert config.service("GitHub", "Acme").secret
    assert config.service("Phabricator", "Acme").instance.startswith("https://")
    assert config.analyzers.for_door("Jenkins", "Acme").notify_only_on_failure == ("test-prod-env",)
    assert config.allow_unsigned == frozenset()
    assert all(config.features.values())
    assert validate_files(EXAMPLE, environ={}) == []


def test_relative_paths_are_resolved_against_the_file_folder(tmp_path):
    write(tmp_path / "conf", "creds/c.json", {"services": [{"gate": "Jenkins", "door": "A"}]})
    path = write(tmp_path / "conf", "n.toml", '[gate]\ncredentials = "creds/c.json"\n')
    config = load_config(path, environ={})
    assert config.services[0].door == "A"
    assert config.storage_directory == (tmp_path / "conf" / "var").resolve()


def test_environment_overrides_the_broker_settings(tmp_path):
    path = write(tmp_path, "n.toml", '[broker]\nhost = "file"\nport = 1\npassword = "p"\n')
    config = load_config(
        path,
        environ={
            "BROKER_HOST": "env-host",
            "BROKER_PORT": "5673",
            "BROKER_USERNAME": "u",
            "BROKER_PASSWORD": "secret-from-env",
            "BROKER_VHOST": "/v",
        },
    )
    assert config.broker == BrokerConfig(
        host="env-host", port=5673, username="u", password="secret-from-env", vhost="/v"
    )


def test_defaults_without_a_file_section(tmp_path):
    config = load_config(write(tmp_path, "n.toml", ""), environ={})
    assert config.broker == BrokerConfig()
    assert config.services == ()
    assert config.analyzers.for_door("GitHub", "X").administrative_group == "orgz"


def test_secrets_stay_out_of_repr(tmp_path):
    write(tmp_path, "c.json", {"services": [{"gate": "GitHub", "door": "A", "secret": "xyzzy"}]})
    write(tmp_path, "t.json", {"a/b": "tokentoken"})
    path = write(
        tmp_path,
        "n.toml",
        '[broker]\npassword = "hunter2"\n[gate]\ncredentials = "c.json"\n'
        'dockerhub_tokens = "t.json"\n[mailgun]\nkey = "mailgun-key"\n',
    )
    text = repr(load_config(path, environ={}))
    for secret in ("xyzzy", "tokentoken", "hunter2", "mailgun-key"):
        assert secret not in text


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[brokr]\n", "unknown section [brokr]"),
        ("[broker]\nhots = 'x'\n", "unknown key 'hots' in [broker]"),
        ("[broker]\nport = 'x'\n", "[broker] port must be of type int"),
        ("[features]\nGate = 'yes'\n", "[features] Gate must be of type bool"),
        ("[gate]\nallow_unsigned = ['Jenkins']\n", "'Jenkins' is not a gate whose callers sign"),
        ("[gate]\npublish_timeout = 0\n", "publish_timeout must be positive"),
        ("[gate]\ncredentials = 'missing.json'\n", "No such file or directory"),
        ("[gate]\nanalyzers = 'nowhere'\n", "analyzers directory not found"),
        ("not toml = = =\n", "invalid TOML"),
    ],
)
def test_configuration_errors_name_the_problem(tmp_path, toml, message):
    path = write(tmp_path, "n.toml", toml)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert message in str(caught.value)
    assert str(tmp_path) in str(caught.value)


def test_a_missing_configuration_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nothing\.toml: No such file"):
        load_config(tmp_path / "nothing.toml", environ={})


def test_a_bad_broker_port_in_the_environment_is_named(tmp_path):
    with pytest.raises(ConfigError, match="BROKER_PORT: not a port number: 'x'"):
        load_config(write(tmp_path, "n.toml", ""), environ={"BROKER_PORT": "x"})


@pytest.mark.parametrize(
    ("services", "message"),
    [
        (
            [{"gate": "GitHub", "door": "Acme", "secert": "x"}],
            "services[0] (GitHub/Acme): unknown key 'secert'",
        ),
        ([{"gate": "GitHub"}], "services[0]: door must be a non-empty string"),
        ([{"gate": "Gitlab", "door": "A"}], "unknown gate 'Gitlab'"),
        ([{"gate": "Phabricator", "door": "A"}], "needs an instance URL"),
        (
            [{"gate": "Jenkins", "door": "A"}, {"gate": "Jenkins", "door": "A"}],
            "services[1] (Jenkins/A): this gate and door are already declared",
        ),
        ([{"gate": "GitHub", "door": "A", "secret": 3}], "secret must be a string"),
        (["x"], "services[0] must be an object"),
    ],
)
def test_credentials_entries_are_checked(tmp_path, services, message):
    write(tmp_path, "c.json", {"services": services})
    path = minimal(tmp_path, 'credentials = "c.json"')
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert message in str(caught.value)
    assert any(message in str(error) for error in validate_files(path, environ={}))


def test_credentials_must_have_a_services_list(tmp_path):
    write(tmp_path, "c.json", [])
    with pytest.raises(ConfigError, match='"services" list'):
        load_config(minimal(tmp_path, 'credentials = "c.json"'), environ={})


def test_validate_reports_every_broken_file(tmp_path):
    write(tmp_path, "c.json", "{not json")
    write(tmp_path, "t.json", {"a/b": 1})
    write(tmp_path, "an/GitHub/Acme.json", {"map": "nope"})
    write(tmp_path, "an/Jenkins/default.json", "[")
    write(tmp_path, "an/Phabricator/Acme.json", {"defaultGroup": "x"})
    path = minimal(
        tmp_path, 'credentials = "c.json"\ndockerhub_tokens = "t.json"\nanalyzers = "an"'
    )
    errors = validate_files(path, environ={})
    files = sorted(Path(error.path).name for error in errors)
    assert files == ["Acme.json", "c.json", "default.json", "t.json"]
    assert any("map must be a list" in str(error) for error in errors)


def test_config_path_precedence():
    assert config_path("x.toml", environ={"NOTIFICATIONS_CONFIG": "y"}) == Path("x.toml")
    assert config_path(None, environ={"NOTIFICATIONS_CONFIG": "y.toml"}) == Path("y.toml")
    assert config_path(None, environ={}) == Path("etc/notifications.toml")


# Analyzers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("docker-*", "docker-nginx", True),
        ("docker-*", "docker-", True),
        ("docker-*", "Docker-nginx", False),
        ("docker-*", "my-docker-nginx", False),
        ("ops", "ops", True),
        ("ops", "ops2", False),
        ("*-prod-*", "test-prod-env", True),
        ("a.b", "axb", False),
        ("a?", "ab", False),
        ("*", "", True),
    ],
)
def test_item_patterns(pattern, name, expected):
    assert item_matches(pattern, name) is expected


def test_groups_by_item_and_default():
    config = parse_analyzer(
        {
            "defaultGroup": "",
            "map": [
                {"group": "docker", "items": ["docker-*"]},
                {"group": "ops", "items": ["ops", "docker-ops"]},
            ],
        }
    )
    assert config.group_for_item("docker-ops", "Acme") == "docker"  # first mapping wins
    assert config.group_for_item("ops", "Acme") == "ops"
    assert config.group_for_item("website", "Acme") == "acme"


def test_story_groups_projects_then_words_then_default():
    config = parse_analyzer(
        {
            "defaultGroup": "dev",
            "map": [
                {"group": "docker", "items": ["Docker images"], "words": ["container"]},
                {"group": "ops", "items": ["Servers"], "words": ["Outage"]},
                {"group": "sec", "words": ["CVE"], "wordsAreStrong": True},
            ],
        }
    )
    assert config.group_for_story(["Servers"], "a container", "A") == "ops"
    assert config.group_for_story([], "an OUTAGE today", "A") == "ops"
    assert config.group_for_story([], "a container outage", "A") == "docker"
    assert config.group_for_story(["Servers"], "fix cve-2026-1", "A") == "sec"
    assert config.group_for_story(["Other"], "nothing", "A") == "dev"


def test_door_file_then_default_then_builtin(tmp_path):
    write(tmp_path, "GitHub/Acme.json", {"defaultGroup": "acme-dev"})
    write(tmp_path, "GitHub/default.json", {"administrativeGroup": "admins"})
    analyzers = Analyzers(tmp_path)
    assert analyzers.for_door("GitHub", "Acme").default_group == "acme-dev"
    assert analyzers.for_door("GitHub", "Other").administrative_group == "admins"
    assert analyzers.for_door("Jenkins", "Acme").default_group == ""


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "must be a JSON object"),
        ({"mapp": []}, "unknown key 'mapp'"),
        ({"map": [{"items": ["x"]}]}, "group must be a non-empty string"),
        ({"map": [{"group": "g", "items": "x"}]}, "items must be a list of strings"),
        ({"map": [{"group": "g", "itmes": []}]}, "unknown key 'itmes'"),
        ({"notifyOnlyOnFailure": [1]}, "notifyOnlyOnFailure must be a list of strings"),
        ({"defaultGroup": 3}, "defaultGroup must be a string"),
    ],
)
def test_analyzer_errors(data, message):
    with pytest.raises(ValueError, match=message):
        parse_analyzer(data)
