"""``[[consumers]]``, ``[[subscriptions]]`` and ``[events]`` in the configuration
(reference §10.1, §11.1): what is read, and each mistake stopping the start with one line."""

from __future__ import annotations

import pytest

from notifications.config import MAX_RETRY_DELAY, load_config
from notifications.errors import ConfigError
from tests.processes import popen_twistd

TOKEN = "dashboard-token-0123456789"
SECRET = "signing-secret"


def consumer(name: str = "dashboard", token: str = TOKEN, patterns='["acme.#"]', extra="") -> str:
    return f'\n[[consumers]]\nname = "{name}"\ntoken = "{token}"\npatterns = {patterns}\n{extra}'


def subscription(
    name: str = "relay",
    url: str = "https://relay.example.org/hook",
    patterns='["acme.#"]',
    extra: str = "",
    secret: str = f'secret = "{SECRET}"',
) -> str:
    return (
        f'\n[[subscriptions]]\nname = "{name}"\nurl = "{url}"\npatterns = {patterns}\n'
        f"{secret}\n{extra}"
    )


def test_consumers_subscriptions_and_events_are_read(tmp_path):
    path = tmp_path / "n.toml"
    path.write_text(
        "[events]\nmax_streams = 7\nheartbeat = 2.5\nmax_buffer = 4096\n"
        + consumer(patterns='["acme.#", "*.ops.#", "acme.#"]')
        + consumer("ci", token_line := "ci-token-from-a-file!", patterns="[]")
        + subscription(extra="allow_private = false\ninitial_delay = 2\nmax_delay = 60\n")
        + subscription(
            "chat",
            "http://127.0.0.1:8000/x?key=in-the-url",
            extra="allow_private = true\nmax_attempts = 5\n",
            secret='secret_env = "CHAT_SECRET"',
        )
    )
    config = load_config(path, environ={"CHAT_SECRET": "from-the-environment"})
    assert (config.events.max_streams, config.events.heartbeat, config.events.max_buffer) == (
        7,
        2.5,
        4096,
    )
    dashboard, ci = config.consumers
    assert (dashboard.name, dashboard.token, dashboard.patterns) == (
        "dashboard",
        TOKEN,
        ("acme.#", "*.ops.#"),  # repeated patterns once
    )
    assert (ci.token, ci.patterns) == (token_line, ())
    relay, chat = config.subscriptions
    assert (relay.initial_delay, relay.max_delay, relay.max_attempts) == (2.0, 60.0, 300)
    assert (relay.origin, relay.secret, relay.allow_private) == (
        "https://relay.example.org",
        SECRET,
        False,
    )
    assert (chat.origin, chat.secret, chat.max_attempts) == (
        "http://127.0.0.1:8000",
        "from-the-environment",
        5,
    )
    # Tokens, secrets and URLs (which may hold a secret) stay out of every repr.
    shown = repr(config)
    for secret in (TOKEN, token_line, SECRET, "from-the-environment", "in-the-url"):
        assert secret not in shown


def test_defaults(tmp_path):
    path = tmp_path / "n.toml"
    path.write_text(subscription())
    config = load_config(path, environ={})
    assert config.consumers == ()
    assert (config.events.max_streams, config.events.heartbeat, config.events.max_buffer) == (
        100,
        15.0,
        1024 * 1024,
    )
    [relay] = config.subscriptions
    assert (relay.allow_private, relay.initial_delay, relay.max_delay, relay.max_attempts) == (
        False,
        1.0,
        300.0,
        300,
    )


#: (the configuration, the problem it must be refused with).
MISTAKES = [
    (
        subscription(url="https://10.1.2.3/hook"),
        "subscriptions[0] (relay): url 10.1.2.3 is not a public address (loopback, private, "
        "link-local…): allowed only with allow_private = true",
    ),
    (
        subscription(url="http://relay.example.org/hook"),
        "subscriptions[0] (relay): url plain http is allowed only with allow_private = true "
        "(the notification and its signature would cross the network in clear)",
    ),
    (
        subscription(url="https://[fe80::1]/hook"),
        "subscriptions[0] (relay): url fe80::1 is not a public address",
    ),
    (
        subscription(url="https://user:hunter2-in-url@relay.example.org/hook"),
        "subscriptions[0] (relay): url must not hold a user name or password",
    ),
    (
        subscription(url="ftp://relay.example.org/hook"),
        "subscriptions[0] (relay): url must start with https://",
    ),
    (
        consumer() + consumer("ci"),
        "consumers[1] (ci): the same token as consumers[0] (dashboard): each consumer needs "
        "its own",
    ),
    (
        consumer(patterns='["acme.de*"]'),
        "consumers[0] (dashboard): 'acme.de*' is not a routing-key pattern: the word 'de*' "
        "mixes '*' or '#' with other characters",
    ),
    (
        subscription(patterns='["acme.#", "#x"]'),
        "subscriptions[0] (relay): '#x' is not a routing-key pattern",
    ),
    (
        subscription(patterns="[]"),
        "subscriptions[0] (relay): patterns must list at least one routing-key pattern",
    ),
    (
        consumer() + consumer(token="another-token-0123456789"),
        "consumers[1] (dashboard): the name 'dashboard' is already taken by consumers[0]",
    ),
    (
        subscription() + subscription(),
        "subscriptions[1] (relay): the name 'relay' is already taken by subscriptions[0]",
    ),
    (
        consumer(name="has space"),
        "consumers[0] (has space): name must be 1 to 64 letters, digits, '-' or '_'",
    ),
    (consumer(token="short"), "consumers[0] (dashboard): the token must be at least 16 characters"),
    (
        consumer(extra='tokn = "x"\n'),
        "consumers[0] (dashboard): unknown key 'tokn' (expected name, patterns, token, "
        "token_env, token_file)",
    ),
    (
        subscription(secret=""),
        "subscriptions[0] (relay): a subscription needs a signing secret (secret, secret_env "
        "or secret_file)",
    ),
    (
        subscription(secret='secret_env = "NOT_SET_ANYWHERE"'),
        "subscriptions[0] (relay): environment variable NOT_SET_ANYWHERE is not set",
    ),
    (
        subscription(extra=f"max_delay = {MAX_RETRY_DELAY + 1:g}\n"),
        "subscriptions[0] (relay): max_delay must be between initial_delay and 1200 seconds",
    ),
    (
        subscription(extra="max_attempts = 0\n"),
        "subscriptions[0] (relay): max_attempts must be 1 or more",
    ),
    (
        subscription(extra='allow_private = "yes"\n'),
        "subscriptions[0] (relay): allow_private must be of type bool",
    ),
    (
        '\n[consumers]\nname = "dashboard"\n',
        "consumers must be an array of tables: [[consumers]] entries",
    ),
    ("\n[events]\nmax_streams = 0\n", "[events] max_streams must be positive"),
]


@pytest.mark.parametrize(("toml", "problem"), MISTAKES, ids=[p for _, p in MISTAKES])
def test_each_mistake_is_refused_naming_the_entry(tmp_path, toml, problem):
    path = tmp_path / "n.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as refused:
        load_config(path, environ={})
    message = str(refused.value)
    assert message.startswith(f"{path}: {problem}"), message
    for secret in (TOKEN, SECRET, "hunter2-in-url"):
        assert secret not in message


#: The mistakes the task names: twistd stops on each with one line.
AT_START = [MISTAKES[0], MISTAKES[5], MISTAKES[6], MISTAKES[9], MISTAKES[10]]


@pytest.mark.parametrize(("toml", "problem"), AT_START, ids=[p[:40] for _, p in AT_START])
def test_twistd_stops_on_each_with_one_line(tmp_path, toml, problem):
    path = tmp_path / "n.toml"
    path.write_text(toml)
    process = popen_twistd(path)
    out, err = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"notifications: configuration error: {path}: {problem}")
