"""The configuration file (TOML) and the files it names (docs/reference.rst §7).

Everything is read and checked once, at start-up: a wrong file stops the
daemon with one line naming the file and the problem. Secrets are kept out of
every ``repr`` so that they cannot reach a log by accident.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .addresses import url_problem
from .analyzers import Analyzers, read_json
from .credentials import Service, load_services, resolve_secret
from .errors import ConfigError
from .gates import signing_gates
from .routing import pattern_error

FEATURES = ("Gate", "GetConfig", "ActionsReport")

DEFAULT_CONFIG = "etc/notifications.toml"

#: Hosts a Mailgun ``storage.url`` may point to (the API key is sent there).
DEFAULT_MAILGUN_HOSTS = ("*.mailgun.net",)

_HOST_NAME = re.compile(r"(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*")

_SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "broker": {
        "host": str,
        "hosts": list,
        "port": int,
        "username": str,
        "password": str,
        "password_env": str,
        "password_file": str,
        "vhost": str,
        "exchange": str,
        "tls": bool,
        "heartbeat": int,
        "connect_timeout": (int, float),
    },
    "gate": {
        "credentials": str,
        "analyzers": str,
        "dockerhub_tokens": str,
        "allow_unsigned": list,
        "publish_timeout": (int, float),
        "max_body_size": int,
        "dedup_window": (int, float),
        "request_timeout": (int, float),
        "idle_timeout": (int, float),
        "max_in_progress": int,
        "short_path": bool,
        "public_url": str,
    },
    "features": {name: bool for name in FEATURES},
    "storage": {
        "directory": str,
        "synchronous": str,
        "max_messages": int,
        "max_bytes": int,
        "drain_timeout": (int, float),
    },
    "http": {"timeout": (int, float)},
    "mailgun": {"key": str, "key_env": str, "key_file": str, "hosts": list},
    "dockerhub": {"base_url": str},
    "archive": {
        "enabled": bool,
        "queue": str,
        "max_age": str,
        "max_bytes": int,
        "segment_bytes": int,
    },
    "events": {"max_streams": int, "heartbeat": (int, float), "max_buffer": int},
}

#: The arrays of tables (``[[consumers]]``…): the keys of each entry and their types.
_ENTRIES: dict[str, dict[str, type | tuple[type, ...]]] = {
    "consumers": {
        "name": str,
        "token": str,
        "token_env": str,
        "token_file": str,
        "patterns": list,
    },
    "subscriptions": {
        "name": str,
        "url": str,
        "patterns": list,
        "secret": str,
        "secret_env": str,
        "secret_file": str,
        "allow_private": bool,
        "initial_delay": (int, float),
        "max_delay": (int, float),
        "max_attempts": int,
    },
}

_BROKER_ENVIRONMENT = {
    "host": "BROKER_HOST",
    "port": "BROKER_PORT",
    "username": "BROKER_USERNAME",
    "password": "BROKER_PASSWORD",
    "vhost": "BROKER_VHOST",
}


@dataclass(frozen=True)
class BrokerConfig:
    """Where and how to reach RabbitMQ: one node, or the nodes of a cluster."""

    host: str = "localhost"
    port: int = 5672
    username: str = "guest"
    password: str = field(default="guest", repr=False)
    vhost: str = "/"
    exchange: str = "notifications"
    tls: bool = False
    heartbeat: int = 5
    connect_timeout: float = 10.0
    #: The nodes of a cluster, ``(host, port)`` each; empty for the one node ``host:port``.
    hosts: tuple[tuple[str, int], ...] = ()

    @property
    def nodes(self) -> tuple[tuple[str, int], ...]:
        """Every node the daemon may connect to, ``(host, port)`` each."""
        return self.hosts or ((self.host, self.port),)

    def describe(self) -> str:
        """``host:port`` of the node, or of every node of the cluster, comma-separated."""
        return ",".join(
            f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in self.nodes
        )


#: ``x-max-age`` of a stream: a number and a unit (years, months, days, hours,
#: minutes, seconds), as RabbitMQ writes it.
_MAX_AGE = re.compile(r"[1-9][0-9]*[YMDhms]")


@dataclass(frozen=True)
class ArchiveConfig:
    """The stream queue every notification is kept in (the history)."""

    enabled: bool = True
    #: The stream's name; empty: ``<exchange>.archive``.
    queue: str = ""
    #: How long a notification is kept (``x-max-age``).
    max_age: str = "7D"
    #: The most the stream keeps on each node's disk (``x-max-length-bytes``).
    max_bytes: int = 1024**3
    #: The size of a segment file; retention drops whole segments.
    segment_bytes: int = 64 * 1024**2


@dataclass(frozen=True)
class EventsConfig:
    """The server-sent events of ``GET /events`` (reference §10)."""

    #: Streams open at once in one process; past it, 503 and Retry-After.
    max_streams: int = 100
    #: Seconds between the comments that keep an idle stream open through proxies.
    heartbeat: float = 15.0
    #: Bytes of notifications waiting for a client that does not read before it is
    #: disconnected.
    max_buffer: int = 1024 * 1024


@dataclass(frozen=True)
class ConsumerConfig:
    """A consumer of ``GET /events``: its name, its token, the patterns it may read."""

    name: str
    token: str = field(repr=False)
    #: Routing-key patterns; none: the consumer reads nothing.
    patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class SubscriptionConfig:
    """An outgoing webhook: notifications matching ``patterns`` are POSTed to ``url``
    (reference §11)."""

    name: str
    #: Out of every repr: a receiver's URL often holds its own secret (chat webhooks).
    url: str = field(repr=False)
    patterns: tuple[str, ...]
    secret: str = field(repr=False)
    #: Whether the URL may point to a loopback, private or link-local address (and
    #: may be plain http).
    allow_private: bool = False
    initial_delay: float = 1.0
    max_delay: float = 300.0
    max_attempts: int = 300

    @property
    def origin(self) -> str:
        """``scheme://host[:port]``: what logs, errors and reports say of the URL."""
        parts = urlsplit(self.url)
        host = parts.hostname or "?"
        if ":" in host:
            host = f"[{host}]"
        return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


@dataclass(frozen=True)
class Config:
    """The whole configuration of the daemon."""

    path: Path
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    services: tuple[Service, ...] = ()
    analyzers: Analyzers = field(default_factory=lambda: Analyzers(None))
    dockerhub_tokens: Mapping[str, str] = field(default_factory=dict, repr=False)
    allow_unsigned: frozenset[str] = frozenset()
    features: Mapping[str, bool] = field(default_factory=lambda: dict.fromkeys(FEATURES, True))
    storage_directory: Path = Path("var")
    synchronous: str = "full"
    max_messages: int = 100_000
    max_bytes: int | None = None
    drain_timeout: float = 10.0
    dedup_window: float = 86_400.0
    request_timeout: float = 30.0
    idle_timeout: float = 60.0
    max_in_progress: int = 512
    #: Whether gate calls take the short HTTP path (notifications/gatepath.py)
    #: rather than twisted.web's Request; read when a port starts listening.
    short_path: bool = True
    publish_timeout: float = 2.0
    max_body_size: int = 25 * 1024 * 1024
    #: The address senders reach the gates at (``https://notifications.example.org``):
    #: ``notifications door add`` prints the URL to paste from it.
    public_url: str | None = None
    http_timeout: float = 10.0
    mailgun_key: str | None = field(default=None, repr=False)
    mailgun_hosts: tuple[str, ...] = DEFAULT_MAILGUN_HOSTS
    dockerhub_base_url: str = "https://registry.hub.docker.com"
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    consumers: tuple[ConsumerConfig, ...] = ()
    subscriptions: tuple[SubscriptionConfig, ...] = ()
    files: tuple[Path, ...] = ()

    def consumer(self, name: str) -> ConsumerConfig | None:
        """The consumer of that name, if any."""
        for consumer in self.consumers:
            if consumer.name == name:
                return consumer
        return None

    def subscription(self, name: str) -> SubscriptionConfig | None:
        """The subscription of that name, if any."""
        for subscription in self.subscriptions:
            if subscription.name == name:
                return subscription
        return None

    def service(self, gate: str, door: str) -> Service | None:
        """The credentials entry of a (gate, door), if any."""
        for service in self.services:
            if service.gate == gate and service.door == door:
                return service
        return None

    def feature(self, name: str) -> bool:
        return self.features.get(name, True)


def _check_types(data: dict[str, Any], path: Path) -> None:
    for section, values in data.items():
        if section in _ENTRIES:
            if not isinstance(values, list):
                raise ConfigError(
                    path, f"{section} must be an array of tables: [[{section}]] entries"
                )
            continue  # each entry is checked by its reader (_consumers, _subscriptions)
        schema = _SCHEMA.get(section)
        if schema is None:
            raise ConfigError(path, f"unknown section [{section}]")
        if not isinstance(values, dict):
            raise ConfigError(path, f"[{section}] must be a table")
        for key, value in values.items():
            expected = schema.get(key)
            if expected is None:
                raise ConfigError(path, f"unknown key {key!r} in [{section}]")
            if isinstance(value, bool) and expected in (int, (int, float)):
                raise ConfigError(path, f"[{section}] {key} must be a number")
            if not isinstance(value, expected):
                kind = getattr(expected, "__name__", "number")
                raise ConfigError(path, f"[{section}] {key} must be of type {kind}")


def parse_node(text: str, default_port: int, where: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` as ``(host, port)``."""
    value = text.strip()
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError(where, f"not a host[:port]: {text!r}")
        port_text = rest[1:]
    elif value.count(":") > 1:
        raise ConfigError(where, f"an IPv6 address takes brackets ([{value}]:port): {text!r}")
    else:
        host, _, port_text = value.partition(":")
    if not host:
        raise ConfigError(where, f"not a host[:port]: {text!r}")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ConfigError(where, f"not a port number in {text!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(where, f"not a port number in {text!r}")
    return host, port


def _broker(section: dict[str, Any], environ: Mapping[str, str], path: Path) -> BrokerConfig:
    values = {key: value for key, value in section.items() if not key.startswith("password")}
    password = resolve_secret(section, "password", "[broker]", path, environ)
    if password is not None:
        values["password"] = password
    if "host" in section and "hosts" in section:
        raise ConfigError(path, "[broker]: give host (one node) or hosts (a cluster), not both")
    for key, variable in _BROKER_ENVIRONMENT.items():
        if variable in environ:
            values[key] = environ[variable]
            if key == "host":
                values.pop("hosts", None)
    try:
        values["port"] = int(values.get("port", 5672))
    except ValueError:
        raise ConfigError(
            "BROKER_PORT", f"not a port number: {environ.get('BROKER_PORT')!r}"
        ) from None
    if not 0 < values["port"] < 65536:
        raise ConfigError("[broker] port", f"not a port number: {values['port']}")
    # The older deployment's clients accept a comma-separated list in BROKER_HOST.
    if "BROKER_HOST" in environ and "," in environ["BROKER_HOST"]:
        values["hosts"] = [name for name in environ["BROKER_HOST"].split(",") if name.strip()] or [
            ""
        ]
        where = "BROKER_HOST"
    else:
        where = f"{path}: [broker] hosts"
    if "hosts" in values:
        names = values.pop("hosts")
        if not names:
            raise ConfigError(where, "the list of nodes is empty")
        nodes = []
        for name in names:
            if not isinstance(name, str):
                raise ConfigError(where, f"not a host[:port] string: {name!r}")
            node = parse_node(name, values["port"], where)
            if node in nodes:
                raise ConfigError(where, f"{name!r} is listed twice")
            nodes.append(node)
        values["hosts"] = tuple(nodes)
        values["host"], values["port"] = nodes[0]
    return BrokerConfig(**values)


def _archive(section: dict[str, Any], broker: BrokerConfig, path: Path) -> ArchiveConfig:
    values = dict(section)
    queue = values.get("queue") or f"{broker.exchange}.archive"
    if len(queue.encode()) > 255 or queue.startswith("amq."):
        raise ConfigError(path, f"[archive] queue: {queue!r} is not a queue name of ours")
    values["queue"] = queue
    if "max_age" in values and not _MAX_AGE.fullmatch(values["max_age"]):
        raise ConfigError(
            path,
            f"[archive] max_age: {values['max_age']!r} is not a duration such as 7D, 24h, 90m "
            "(Y, M, D, h, m or s)",
        )
    for key in ("max_bytes", "segment_bytes"):
        if key in values and values[key] <= 0:
            raise ConfigError(path, f"[archive] {key} must be positive")
    return ArchiveConfig(**values)


def _events(section: dict[str, Any], path: Path) -> EventsConfig:
    for key, value in section.items():
        if value <= 0:
            raise ConfigError(path, f"[events] {key} must be positive")
    return EventsConfig(**{key: value for key, value in section.items()})


#: A consumer's or subscription's name: it names queues, metrics labels and log lines.
_ENTRY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

#: The shortest consumer token: a token is a password that scripts hold.
MIN_TOKEN_LENGTH = 16

#: The longest wait between two attempts of a subscription: its subscriber holds the
#: notification while it waits, and RabbitMQ closes the channel of a consumer that
#: holds one past its ``consumer_timeout`` (30 minutes by default).
MAX_RETRY_DELAY = 1200.0


def _entries(data: dict[str, Any], section: str, path: Path) -> list[tuple[str, dict]]:
    """``(where, entry)`` for each ``[[section]]`` entry: its keys, their types and its
    name checked, ``where`` naming it in errors (``consumers[1] (dashboard)``)."""
    schema = _ENTRIES[section]
    checked: list[tuple[str, dict]] = []
    taken: dict[str, str] = {}
    for index, entry in enumerate(data.get(section, [])):
        if not isinstance(entry, dict):
            raise ConfigError(path, f"{section}[{index}] must be a table ([[{section}]])")
        name = entry.get("name")
        where = f"{section}[{index}]" + (f" ({name})" if isinstance(name, str) and name else "")
        unknown = sorted(set(entry) - set(schema))
        if unknown:
            raise ConfigError(
                path,
                f"{where}: unknown key {unknown[0]!r} (expected {', '.join(sorted(schema))})",
            )
        for key, value in entry.items():
            expected = schema[key]
            if isinstance(value, bool) and expected in (int, (int, float)):
                raise ConfigError(path, f"{where}: {key} must be a number")
            if not isinstance(value, expected):
                kind = getattr(expected, "__name__", "number")
                raise ConfigError(path, f"{where}: {key} must be of type {kind}")
        if not isinstance(name, str) or not _ENTRY_NAME.fullmatch(name):
            raise ConfigError(
                path,
                f"{where}: name must be 1 to 64 letters, digits, '-' or '_', starting "
                "with a letter or a digit",
            )
        if name in taken:
            raise ConfigError(path, f"{where}: the name {name!r} is already taken by {taken[name]}")
        taken[name] = f"{section}[{index}]"
        checked.append((where, entry))
    return checked


def _patterns(entry: dict, where: str, path: Path, required: bool) -> tuple[str, ...]:
    patterns = entry.get("patterns", [])
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ConfigError(path, f"{where}: patterns must be strings, not {pattern!r}")
        problem = pattern_error(pattern)
        if problem is not None:
            raise ConfigError(path, f"{where}: {pattern!r} is not a routing-key pattern: {problem}")
    if required and not patterns:
        raise ConfigError(path, f"{where}: patterns must list at least one routing-key pattern")
    return tuple(dict.fromkeys(patterns))


def _consumers(
    data: dict[str, Any], path: Path, environ: Mapping[str, str]
) -> tuple[ConsumerConfig, ...]:
    consumers: list[ConsumerConfig] = []
    owners: dict[str, str] = {}
    for where, entry in _entries(data, "consumers", path):
        token = resolve_secret(entry, "token", where, path, environ)
        if not token:
            raise ConfigError(
                path, f"{where}: a consumer needs a token (token, token_env or token_file)"
            )
        if len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                path, f"{where}: the token must be at least {MIN_TOKEN_LENGTH} characters"
            )
        if token in owners:
            # A token names its consumer: two alike could not be told apart.
            raise ConfigError(
                path, f"{where}: the same token as {owners[token]}: each consumer needs its own"
            )
        owners[token] = where
        patterns = _patterns(entry, where, path, required=False)
        consumers.append(ConsumerConfig(name=entry["name"], token=token, patterns=patterns))
    return tuple(consumers)


def subscription_queue(exchange: str, name: str) -> str:
    """The durable quorum queue where a subscription's notifications wait (reference §11.2)."""
    return f"{exchange}.subscription.{name}"


def dead_letter_queue(exchange: str, name: str) -> str:
    """The queue of a subscription's notifications that were given up on."""
    return subscription_queue(exchange, name) + ".dead"


def dead_letter_exchange(exchange: str) -> str:
    """The direct exchange subscription queues dead-letter to (the routing key: the name)."""
    return f"{exchange}.subscriptions.dead"


def _subscriptions(
    data: dict[str, Any], path: Path, environ: Mapping[str, str], exchange: str
) -> tuple[SubscriptionConfig, ...]:
    subscriptions: list[SubscriptionConfig] = []
    for where, entry in _entries(data, "subscriptions", path):
        if len(dead_letter_queue(exchange, entry["name"]).encode()) > 255:
            raise ConfigError(
                path, f"{where}: the name is too long for a queue name with this exchange"
            )
        url = entry.get("url")
        if not url:
            raise ConfigError(path, f"{where}: url is required")
        allow_private = entry.get("allow_private", False)
        problem = url_problem(url, allow_private)
        if problem is not None:
            # The URL itself is not repeated: it may hold the receiver's secret.
            raise ConfigError(path, f"{where}: url {problem}")
        secret = resolve_secret(entry, "secret", where, path, environ)
        if not secret:
            raise ConfigError(
                path,
                f"{where}: a subscription needs a signing secret (secret, secret_env or "
                "secret_file)",
            )
        initial_delay = float(entry.get("initial_delay", 1.0))
        max_delay = float(entry.get("max_delay", 300.0))
        max_attempts = entry.get("max_attempts", 300)
        if initial_delay <= 0:
            raise ConfigError(path, f"{where}: initial_delay must be positive")
        if not initial_delay <= max_delay <= MAX_RETRY_DELAY:
            raise ConfigError(
                path,
                f"{where}: max_delay must be between initial_delay and {MAX_RETRY_DELAY:g} "
                "seconds (RabbitMQ's consumer_timeout bounds how long a message is held)",
            )
        if max_attempts < 1:
            raise ConfigError(path, f"{where}: max_attempts must be 1 or more")
        subscriptions.append(
            SubscriptionConfig(
                name=entry["name"],
                url=url,
                patterns=_patterns(entry, where, path, required=True),
                secret=secret,
                allow_private=allow_private,
                initial_delay=initial_delay,
                max_delay=max_delay,
                max_attempts=max_attempts,
            )
        )
    return tuple(subscriptions)


def load_dockerhub_tokens(path: Path) -> dict[str, str]:
    """Read ``{"owner/repo": "token"}``."""
    data = read_json(path)
    if not isinstance(data, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in data.items()
    ):
        raise ConfigError(path, 'expected an object of "owner/repo": "token" strings')
    return data


def mailgun_hosts(values: list[Any], path: Path) -> tuple[str, ...]:
    """Check ``[mailgun] hosts``: host names, ``*.domain`` patterns or IP addresses."""
    hosts = []
    for value in values:
        host = value.strip().lower() if isinstance(value, str) else ""
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not _HOST_NAME.fullmatch(host):
                raise ConfigError(
                    path,
                    f"[mailgun] hosts: {value!r} is not a host name, a *.domain pattern "
                    "or an IP address",
                ) from None
        hosts.append(host)
    return tuple(hosts)


def check_public_url(value: str, path: Path) -> str:
    """``[gate] public_url``: an http(s) URL with a host and nothing after its path;
    without its trailing slash."""
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(
            path,
            f"[gate] public_url: {value!r} is not an http(s) URL such as "
            "https://notifications.example.org",
        )
    return value.rstrip("/")


@dataclass(frozen=True)
class Locations:
    """Where the files of a configuration are, read without resolving any secret.

    For the commands that edit the credentials file (``notifications door``):
    the operator's shell need not have the variables the daemon's secrets come
    from.
    """

    path: Path
    credentials: Path | None
    storage_directory: Path
    public_url: str | None


def _resolver(path: Path):
    def resolve(value: str) -> Path:
        return (path.parent / value).resolve() if not os.path.isabs(value) else Path(value)

    return resolve


def load_locations(path: Path) -> Locations:
    """The credentials file, the storage directory and the public URL of a configuration."""
    data = read_toml(path)
    _check_types(data, path)
    resolve = _resolver(path)
    gate = data.get("gate", {})
    return Locations(
        path=path,
        credentials=resolve(gate["credentials"]) if "credentials" in gate else None,
        storage_directory=resolve(data.get("storage", {}).get("directory", "var")),
        public_url=check_public_url(gate["public_url"], path) if "public_url" in gate else None,
    )


def config_path(explicit: str | None = None, environ: Mapping[str, str] = os.environ) -> Path:
    """The configuration file to read: explicit, else $NOTIFICATIONS_CONFIG, else the default."""
    return Path(explicit or environ.get("NOTIFICATIONS_CONFIG") or DEFAULT_CONFIG)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise ConfigError(path, error.strerror or str(error)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(path, f"invalid TOML: {error}") from None


def load_config(path: Path, environ: Mapping[str, str] = os.environ) -> Config:
    """Read and check the configuration file and every file it names.

    Raises :class:`ConfigError` on the first problem.
    """
    data = read_toml(path)
    _check_types(data, path)
    resolve = _resolver(path)

    gate = data.get("gate", {})
    files = [path]
    services: tuple[Service, ...] = ()
    if "credentials" in gate:
        credentials = resolve(gate["credentials"])
        services = load_services(credentials, environ)
        files.append(credentials)
    analyzers = Analyzers(resolve(gate["analyzers"]) if "analyzers" in gate else None)
    files.extend(analyzers.files())
    tokens: dict[str, str] = {}
    if "dockerhub_tokens" in gate:
        tokens_path = resolve(gate["dockerhub_tokens"])
        tokens = load_dockerhub_tokens(tokens_path)
        files.append(tokens_path)

    allow_unsigned = gate.get("allow_unsigned", [])
    signing = signing_gates()
    for name in allow_unsigned:
        if name not in signing:
            raise ConfigError(
                path,
                f"[gate] allow_unsigned: {name!r} is not a gate whose callers sign "
                f"({', '.join(signing)})",
            )

    storage = data.get("storage", {})
    publish_timeout = float(gate.get("publish_timeout", 2.0))
    max_body_size = gate.get("max_body_size", 25 * 1024 * 1024)
    http_timeout = float(data.get("http", {}).get("timeout", 10.0))
    broker = _broker(data.get("broker", {}), environ, path)
    archive = _archive(data.get("archive", {}), broker, path)
    for name, value in (
        ("[gate] publish_timeout", publish_timeout),
        ("[gate] max_body_size", max_body_size),
        ("[gate] dedup_window", gate.get("dedup_window", 1)),
        ("[gate] request_timeout", gate.get("request_timeout", 1)),
        ("[gate] idle_timeout", gate.get("idle_timeout", 1)),
        ("[gate] max_in_progress", gate.get("max_in_progress", 1)),
        ("[http] timeout", http_timeout),
        ("[storage] max_messages", storage.get("max_messages", 1)),
        ("[storage] max_bytes", storage.get("max_bytes", 1)),
        ("[storage] drain_timeout", storage.get("drain_timeout", 1)),
    ):
        if value <= 0:
            raise ConfigError(path, f"{name} must be positive")
    synchronous = storage.get("synchronous", "full")
    if synchronous not in ("full", "normal"):
        raise ConfigError(path, '[storage] synchronous must be "full" or "normal"')

    features = dict.fromkeys(FEATURES, True)
    features.update(data.get("features", {}))

    return Config(
        path=path,
        broker=broker,
        services=services,
        analyzers=analyzers,
        dockerhub_tokens=tokens,
        allow_unsigned=frozenset(allow_unsigned),
        features=features,
        storage_directory=resolve(storage.get("directory", "var")),
        synchronous=synchronous,
        max_messages=storage.get("max_messages", 100_000),
        max_bytes=storage.get("max_bytes"),
        drain_timeout=float(storage.get("drain_timeout", 10.0)),
        dedup_window=float(gate.get("dedup_window", 86_400.0)),
        request_timeout=float(gate.get("request_timeout", 30.0)),
        idle_timeout=float(gate.get("idle_timeout", 60.0)),
        max_in_progress=gate.get("max_in_progress", 512),
        short_path=gate.get("short_path", True),
        publish_timeout=publish_timeout,
        max_body_size=max_body_size,
        public_url=check_public_url(gate["public_url"], path) if "public_url" in gate else None,
        http_timeout=http_timeout,
        mailgun_key=resolve_secret(data.get("mailgun", {}), "key", "[mailgun]", path, environ)
        or None,
        mailgun_hosts=mailgun_hosts(
            data.get("mailgun", {}).get("hosts", list(DEFAULT_MAILGUN_HOSTS)), path
        ),
        dockerhub_base_url=data.get("dockerhub", {}).get(
            "base_url", "https://registry.hub.docker.com"
        ),
        archive=archive,
        events=_events(data.get("events", {}), path),
        consumers=_consumers(data, path, environ),
        subscriptions=_subscriptions(data, path, environ, broker.exchange),
        files=tuple(files),
    )


def validate_files(path: Path, environ: Mapping[str, str] = os.environ) -> list[ConfigError]:
    """Every problem found in the configuration and the JSON files around it.

    Unlike :func:`load_config`, which stops at the first problem, this reads
    every JSON file it can find (credentials, tokens, each analyzer file) and
    returns one error per file that is wrong.
    """
    errors: list[ConfigError] = []
    try:
        data = read_toml(path)
        _check_types(data, path)
    except ConfigError as error:
        return [error]
    base = path.parent
    gate = data.get("gate", {})

    def check(name: str, loader) -> None:
        if name in gate:
            try:
                loader((base / gate[name]).resolve())
            except ConfigError as error:
                errors.append(error)

    check("credentials", load_services)
    check("dockerhub_tokens", load_dockerhub_tokens)
    if "analyzers" in gate:
        from .analyzers import ANALYZED_SERVICES, parse_analyzer

        directory = (base / gate["analyzers"]).resolve()
        if not directory.is_dir():
            errors.append(ConfigError(directory, "analyzers directory not found"))
        for service in ANALYZED_SERVICES:
            for file in sorted((directory / service).glob("*.json")):
                try:
                    parse_analyzer(read_json(file), str(file))
                except ConfigError as error:
                    errors.append(error)
                except ValueError as error:
                    errors.append(ConfigError(file, str(error)))
    if not errors:
        try:
            load_config(path, environ)
        except ConfigError as error:
            errors.append(error)
    return errors
