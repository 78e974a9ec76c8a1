"""``notifications door add|list|remove|rotate|check``: the doors of the credentials file
(reference §8.9).

Opening a door used to be eight manual steps (a random secret, an edit of
``credentials.json`` on the server, the webhook's settings on the sender's
side, a look at the deliveries) and failures were diagnosed by guessing.
Here ``door add`` makes the secret, edits the file (all or nothing, see
:mod:`notifications.credentials`), makes the running daemon reload it and
prints what to paste on the sender's side; ``door rotate`` gives a door a new
secret while the previous one stays accepted for a grace period; ``door
check`` makes the call the sender would make and waits for its notification
on the exchange, or says what went wrong.

The edits run without a reactor (they only read and write files and send a
signal); ``door check`` runs in one, for its HTTP call and the broker.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from twisted.internet import defer, error

from ..config import (
    Config,
    Locations,
    check_public_url,
    config_path,
    load_config,
    load_locations,
)
from ..credentials import (
    CredentialsError,
    CredentialsFile,
    Service,
    Snapshot,
    check_document,
    check_door_name,
    format_expiry,
    parse_expiry,
    replace_file,
    rewrite_secret_file,
    write_secret_file,
)
from ..daemonfiles import PID_NAME, read_reload, running_pid
from ..errors import ConfigError
from ..gates import (
    GateCall,
    GateError,
    Publication,
    gate_class,
    gate_classes,
    gate_names,
    make_gates,
    signing_gates,
)
from ..gates.base import CheckCall, Gate
from .common import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_timeout,
    close_connection,
    connected,
    describe_failure,
    format_table,
    gate_named,
    reload_daemon,
    reporting_errors,
    run_react,
    say,
    start_connection,
)
from .tail import format_notification, parse_notification, wants_colour

#: Bytes of randomness of a door secret (64 hex digits).
SECRET_BYTES = 32

#: What ``door add`` prints when neither ``--public-url`` nor ``[gate] public_url`` is set.
PUBLIC_URL_PLACEHOLDER = "https://<public address of the center: set [gate] public_url>"

DEFAULT_GRACE = "24h"
DEFAULT_CHECK_URL = "http://127.0.0.1:8080"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")


def duration(text: str) -> float:
    """``90s``, ``15m``, ``24h``, ``7d`` or a number of seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90s, 15m, 24h or 7d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def public_url(text: str) -> str:
    """argparse type of ``--public-url``: as ``[gate] public_url``."""
    try:
        return check_public_url(text, Path("--public-url"))
    except ConfigError as problem:
        raise argparse.ArgumentTypeError(problem.problem.partition(": ")[2]) from None


def http_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http(s) URL")
    return text.rstrip("/")


def door_url(base: str, gate: str, door: str) -> str:
    """``<base>/gate/<gate>/<door>``, the door percent-encoded."""
    return f"{base.rstrip('/')}/gate/{gate}/{quote(door, safe='')}"


def secret_reference(path: Path, credentials: Path) -> str:
    """How the credentials file names a secret file: relative to its folder when the
    file is in it (the pair can move together), else absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(credentials.parent.resolve()))
    except ValueError:
        return str(path)


def referenced_path(reference: str, credentials: Path) -> Path:
    """The file a ``…_file`` key names (relative to the credentials file's folder)."""
    path = Path(reference)
    return path if path.is_absolute() else credentials.parent / path


def read_secret(path: Path) -> str:
    """A secret file's content, as the daemon reads it (one trailing newline dropped)."""
    return path.read_text(encoding="utf-8").rstrip("\r\n")


def credentials_of(locations: Locations) -> Path:
    if locations.credentials is None:
        raise CommandError(
            f"{locations.path} names no credentials file ([gate] credentials)", EXIT_USAGE
        )
    if not locations.credentials.exists():
        raise CommandError(
            f'{locations.credentials} does not exist: create it with {{"services": []}}',
            EXIT_USAGE,
        )
    return locations.credentials


def locate(args: argparse.Namespace) -> Locations:
    return load_locations(config_path(args.config))


def refused(problem: CredentialsError) -> CommandError:
    return CommandError(str(problem), EXIT_USAGE if problem.usage else 1)


# door add -------------------------------------------------------------------------


def new_secret() -> str:
    return secrets.token_hex(SECRET_BYTES)


def given_keys(args: argparse.Namespace, gate: type[Gate], credentials: Path) -> dict[str, Any]:
    """The keys of a new entry given on the command line: the instance, and the secrets
    the sender made (files, referenced where the operator put them)."""
    if gate.needs_instance and not args.instance:
        raise CommandError(f"a {gate.name} door needs --instance URL", EXIT_USAGE)
    if not gate.needs_instance and args.instance:
        raise CommandError(f"--instance is not for {gate.name} doors", EXIT_USAGE)
    if gate.makes_door_key:
        for option in ("api_token_file", "hmac_key_file"):
            if getattr(args, option) is not None:
                flag = "--" + option.replace("_", "-")
                raise CommandError(
                    f"{flag} is for the doors whose sender makes the key "
                    f"({', '.join(senders_making_keys())})",
                    EXIT_USAGE,
                )
        return {}
    if args.secret_file:
        raise CommandError(
            f"{gate.name} makes its own secrets: give them with --api-token-file "
            "and --hmac-key-file",
            EXIT_USAGE,
        )
    entry: dict[str, Any] = {"instance": args.instance} if args.instance else {}
    for path, key in ((args.api_token_file, "secret"), (args.hmac_key_file, gate.door_key)):
        if path is not None:
            entry[f"{key}_file"] = secret_reference(Path(path), credentials)
    return entry


def senders_making_keys() -> list[str]:
    return [gate.name for gate in gate_classes() if not gate.makes_door_key]


def command_add(args: argparse.Namespace) -> int:
    gate = gate_class(gate_named(args.gate))
    try:
        check_door_name(args.door)
    except CredentialsError as problem:
        raise refused(problem) from None
    locations = locate(args)
    credentials = credentials_of(locations)
    address = args.public_url or locations.public_url
    keys = given_keys(args, gate, credentials)
    secret = new_secret() if gate.makes_door_key else None
    secret_file = Path(args.secret_file).absolute() if args.secret_file else None
    created: Path | None = None
    try:
        with CredentialsFile(credentials) as file:
            if file.find(gate.name, args.door) is not None:
                raise CommandError(
                    f"the {gate.name} door {args.door} already exists in {credentials} "
                    f"(door rotate gives it a new secret)"
                )
            entry: dict[str, Any] = {"gate": gate.name, "door": args.door, **keys}
            if secret_file is not None:
                entry[f"{gate.door_key}_file"] = secret_reference(secret_file, credentials)
            elif secret is not None:
                entry[gate.door_key] = secret
            file.entries.append(entry)
            if secret_file is not None:
                # Before the entry is checked, which reads it; removed if the entry is refused.
                write_secret_file(secret_file, secret)
                created = secret_file
            file.save()
            created = None
    except CredentialsError as problem:
        raise refused(problem) from None
    finally:
        if created is not None:
            created.unlink(missing_ok=True)
    say(f"Added the {gate.name} door {args.door} to {credentials}.")
    reload_daemon(locations.storage_directory)
    say("")
    url = door_url(address or PUBLIC_URL_PLACEHOLDER, gate.name, args.door)
    for line in gate.sender_setup(args.door, url, secret):
        say(line)
    if secret is not None:
        where = f"in {secret_file} (mode 0600)" if secret_file else f"in {credentials}"
        say(f"The secret is shown only this once; the center keeps it {where}.")
    if address is None:
        say("Set [gate] public_url (or give --public-url) to see the real URL above.")
    say(f"Then check the door: notifications door check {gate.name} {args.door}")
    return EXIT_OK


# door list ------------------------------------------------------------------------


def secret_source(entry: dict[str, Any], key: str, credentials: Path) -> str:
    """Where an entry's secret comes from, never the secret."""
    if entry.get(key):
        return credentials.name
    if entry.get(f"{key}_env"):
        return f"{key}_env {entry[f'{key}_env']}"
    if entry.get(f"{key}_file"):
        return f"{key}_file {entry[f'{key}_file']}"
    return "none"


def rotation_state(entry: dict[str, Any], now: float) -> str:
    """Whether a previous secret is still accepted, and until when."""
    states = []
    for key in ("secret", "hmac_key"):
        expires = entry.get(f"previous_{key}_expires")
        if not isinstance(expires, str):
            continue
        try:
            seconds = parse_expiry(expires)
        except ValueError:
            continue
        if now < seconds:
            states.append(f"previous {key} accepted until {expires} (in {_left(seconds - now)})")
        else:
            states.append(f"previous {key} expired at {expires}")
    return "; ".join(states) or "-"


def _left(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def read_document(credentials: Path) -> dict[str, Any]:
    try:
        document = json.loads(Snapshot.of(credentials).data.decode("utf-8"))
        check_document(document, credentials)
    except UnicodeDecodeError:
        raise CommandError(f"{credentials}: not UTF-8", EXIT_USAGE) from None
    except ValueError as problem:
        raise CommandError(f"{credentials}: invalid JSON: {problem}", EXIT_USAGE) from None
    except CredentialsError as problem:
        raise CommandError(str(problem), EXIT_USAGE) from None
    except OSError as problem:
        raise CommandError(f"cannot read {credentials}: {problem.strerror}") from None
    return document


def list_lines(credentials: Path, now: float) -> list[str]:
    """The lines of ``door list``: every door of the file, and never a secret."""
    entries = read_document(credentials)["services"]
    if not entries:
        return [f"{credentials}: no door"]
    rows = []
    for entry in entries:
        secret = secret_source(entry, "secret", credentials)
        gate = gate_class(entry["gate"])
        if gate is not None and gate.door_key != "secret":
            key = gate.door_key
            secret += f"; {key}: {secret_source(entry, key, credentials)}"
        rows.append(
            (
                entry["gate"],
                entry["door"],
                entry.get("instance") or "ø",
                secret,
                rotation_state(entry, now),
            )
        )
    return [
        f"{credentials}:",
        *format_table(("gate", "door", "instance", "secret from", "rotation"), rows),
    ]


def command_list(args: argparse.Namespace) -> int:
    for line in list_lines(credentials_of(locate(args)), time.time()):
        say(line)
    return EXIT_OK


# door remove ----------------------------------------------------------------------


def command_remove(args: argparse.Namespace) -> int:
    gate = gate_named(args.gate)
    locations = locate(args)
    credentials = credentials_of(locations)
    try:
        with CredentialsFile(credentials) as file:
            index = file.find(gate, args.door)
            if index is None:
                raise CommandError(f"no {gate} door {args.door} in {credentials}")
            entry = file.entries.pop(index)
            file.save()
    except CredentialsError as problem:
        raise refused(problem) from None
    say(f"Removed the {gate} door {args.door} from {credentials}.")
    for key in ("secret_file", "previous_secret_file", "hmac_key_file", "previous_hmac_key_file"):
        if entry.get(key):
            path = referenced_path(entry[key], credentials)
            say(f"Its secret file {path} is left in place: delete it when nothing uses it.")
    reload_daemon(locations.storage_directory)
    return EXIT_OK


# door rotate ----------------------------------------------------------------------


def _still_accepted(entry: dict[str, Any], key: str, now: float) -> str | None:
    expires = entry.get(f"previous_{key}_expires")
    try:
        if isinstance(expires, str) and now < parse_expiry(expires):
            return expires
    except ValueError:
        return None
    return None


def _drop_previous(entry: dict[str, Any], key: str) -> None:
    for name in (f"previous_{key}", f"previous_{key}_file", f"previous_{key}_expires"):
        entry.pop(name, None)


def rotate_secret(
    file: CredentialsFile, entry: dict[str, Any], key: str, expires: str, credentials: Path
) -> tuple[str, Path | None]:
    """Give the entry a new random ``key`` (``secret``), the current one becoming its
    previous one.

    A secret in place keeps its previous value in place (``previous_secret``); a
    secret file keeps it in ``<file>.previous`` (``previous_secret_file``, mode
    0600), and the new secret is written to the secret file once the entry is
    saved. Returns the new secret and the secret file (or None).
    """
    if entry.get(f"{key}_env"):
        raise CommandError(
            f"the {key} of this door comes from the variable {entry[f'{key}_env']} "
            f"({key}_env): rotate it where that variable is set"
        )
    secret = new_secret()
    if entry.get(key):
        _drop_previous(entry, key)
        entry[f"previous_{key}"] = entry[key]
        entry[f"previous_{key}_expires"] = expires
        entry[key] = secret
        file.save()
        return secret, None
    if not entry.get(f"{key}_file"):
        raise CommandError(
            f"this door has no {key} (it accepts calls without one): door remove, then "
            "door add, gives it one"
        )
    path = referenced_path(entry[f"{key}_file"], credentials)
    try:
        current = read_secret(path)
    except OSError as problem:
        raise CommandError(f"cannot read the secret file {path}: {problem.strerror}") from None
    previous = path.with_name(path.name + ".previous")
    before = previous.read_bytes() if previous.exists() else None
    _drop_previous(entry, key)
    entry[f"previous_{key}_file"] = entry[f"{key}_file"] + ".previous"
    entry[f"previous_{key}_expires"] = expires
    try:
        replace_file(previous, (current + "\n").encode("utf-8"), 0o600)
        file.save()
    except BaseException:
        # The entry was not saved: the previous file goes back to what it was.
        if before is None:
            previous.unlink(missing_ok=True)
        else:
            replace_file(previous, before, 0o600)
        raise
    rewrite_secret_file(path, secret)
    return secret, path


def rotate_given_key(
    file: CredentialsFile,
    entry: dict[str, Any],
    key: str,
    new_file: Path,
    expires: str,
    credentials: Path,
) -> bool:
    """A new ``key`` that the sender made (a Herald HMAC key), which the operator gives in
    a new file, the current one kept as its previous one. False when the door had none."""
    if entry.get(f"{key}_env"):
        raise CommandError(
            f"the {key} of this door comes from the variable {entry[f'{key}_env']} "
            f"({key}_env): rotate it where that variable is set"
        )
    reference = secret_reference(new_file, credentials)
    had_key = bool(entry.get(key) or entry.get(f"{key}_file"))
    _drop_previous(entry, key)
    if entry.get(key):
        entry[f"previous_{key}"] = entry.pop(key)
        entry[f"previous_{key}_expires"] = expires
    elif entry.get(f"{key}_file"):
        old = referenced_path(entry[f"{key}_file"], credentials).resolve()
        if old == new_file.resolve():
            raise CommandError(
                f"{new_file} is the file of the current key: put the new key in a new file "
                "(the current one is read until the grace period ends)",
                EXIT_USAGE,
            )
        entry[f"previous_{key}_file"] = entry.pop(f"{key}_file")
        entry[f"previous_{key}_expires"] = expires
    entry.pop(key, None)
    entry[f"{key}_file"] = reference
    file.save()
    return had_key


def command_rotate(args: argparse.Namespace) -> int:
    gate = gate_class(gate_named(args.gate))
    locations = locate(args)
    credentials = credentials_of(locations)
    key = gate.door_key
    if gate.makes_door_key and args.hmac_key_file is not None:
        raise CommandError(
            f"--hmac-key-file is for the doors whose sender makes the key "
            f"({', '.join(senders_making_keys())})",
            EXIT_USAGE,
        )
    if not gate.makes_door_key and args.hmac_key_file is None:
        raise CommandError(
            f"{gate.name} makes the key: give the new one with --hmac-key-file "
            "(cycle it on the sender's side first)",
            EXIT_USAGE,
        )
    now = time.time()
    expires = format_expiry(now + args.grace)
    try:
        with CredentialsFile(credentials) as file:
            index = file.find(gate.name, args.door)
            if index is None:
                raise CommandError(f"no {gate.name} door {args.door} in {credentials}")
            entry = file.entries[index]
            accepted = _still_accepted(entry, key, now)
            if accepted is not None and not args.force:
                raise CommandError(
                    f"the previous {key} of this door is accepted until {accepted}: rotating "
                    "again would drop it now (--force does)"
                )
            if gate.makes_door_key:
                secret, secret_file = rotate_secret(file, entry, key, expires, credentials)
                had_key = True
            else:
                had_key = rotate_given_key(
                    file, entry, key, Path(args.hmac_key_file), expires, credentials
                )
                secret, secret_file = None, None
    except CredentialsError as problem:
        raise refused(problem) from None
    say(f"Rotated the {key} of the {gate.name} door {args.door} in {credentials}.")
    reload_daemon(locations.storage_directory)
    say("")
    if had_key:
        say(f"The previous {key} is accepted until {expires}: set the new one before then.")
    if secret is not None:
        url = door_url(locations.public_url or PUBLIC_URL_PLACEHOLDER, gate.name, args.door)
        for line in gate.sender_setup(args.door, url, secret):
            say(line)
        where = f"in {secret_file}" if secret_file else f"in {credentials}"
        say(f"The new secret is shown only this once; the center keeps it {where}.")
    say(f"Then check the door: notifications door check {gate.name} {args.door}")
    return EXIT_OK


# door check -----------------------------------------------------------------------


class CheckFailed(CommandError):
    """``door check`` saw something wrong: the diagnosis."""


def expected_publication(
    config: Config, gate: str, door: str, call: CheckCall
) -> Publication | None:
    """The notification the daemon publishes for this call, computed by the same gate
    code with this configuration (trusting the call: the daemon decides whether to
    refuse it). None when the gate publishes nothing or refuses it here."""
    trusting = replace(config, allow_unsigned=config.allow_unsigned | set(signing_gates()))
    outcome = make_gates(trusting)[gate].process(
        GateCall(door=door, headers=dict(call.headers), body=call.body)
    )
    if isinstance(outcome, defer.Deferred):  # not for these calls: no client is given
        return None
    return outcome.publications[0] if outcome.publications else None


def last_read(storage: Path) -> float | None:
    """When the running daemon last read its configuration: its start or last good reload."""
    times = []
    try:
        times.append((storage / PID_NAME).stat().st_mtime)
    except OSError:
        pass
    record = read_reload(storage)
    if record is not None and record.get("ok") and isinstance(record.get("time"), int | float):
        times.append(record["time"])
    return max(times) if times else None


def staleness(config: Config) -> str:
    """A hint when the credentials file changed after the daemon read it."""
    credentials = load_locations(config.path).credentials
    pid = running_pid(config.storage_directory)
    read = last_read(config.storage_directory)
    if credentials is None or pid is None or read is None:
        return ""
    try:
        changed = credentials.stat().st_mtime
    except OSError:
        return ""
    if changed <= read:
        return ""
    return (
        f"; {credentials} changed at {time.strftime('%H:%M:%S', time.localtime(changed))}, "
        f"after the daemon (process {pid}) last read it: reload it (kill -HUP {pid})"
    )


def diagnose(
    config: Config, gate: str, door: str, service: Service | None, status: int, body: bytes
) -> str:
    """What a refusal of the check call means."""
    lines = body.decode("utf-8", "replace").strip().split("\n")
    first = lines[0].strip() if lines else ""
    second = lines[1].strip() if len(lines) > 1 else ""
    said = f" (the daemon said: {first}{' — ' + second if second else ''})"
    kind = gate_class(gate)
    key = kind.door_key
    has_key = service is not None and bool(getattr(service, key, None))
    if status == 403:
        if kind.signs and not has_key:
            return (
                f"403: the credentials file gives the {gate} door {door} no {key}, and "
                f"unsigned calls are not allowed ([gate] allow_unsigned): door remove, then "
                f"door add, gives it one{said}"
            )
        if not has_key:
            return (
                f"403: the daemon's {gate} door {door} requires a {key} that the credentials "
                f"file does not give it: the daemon has not read the file since{said}"
                + staleness(config)
            )
        what = "signature" if kind.signs else "token"
        return (
            f"403: the daemon refused the {what} made with the credentials file's {key}: "
            f"it checks another one — was it reloaded since the file changed?{said}"
            + staleness(config)
        )
    if status == 404:
        if first not in ("Not found.", "Unknown Phabricator instance."):
            return (
                "404: no gate at this URL: is it the daemon's public port, and its Gate feature on?"
            )
        if service is None:
            return (
                f"404: the daemon does not know the {gate} door {door}, nor does the "
                f"credentials file: notifications door add {gate} {door}{said}"
            )
        return (
            f"404: the daemon does not know the {gate} door {door}, which the credentials "
            f"file declares: it has not read the file since{said}" + staleness(config)
        )
    if status == 400:
        return f"400: the daemon found the call invalid: {second or first}"
    if status == 503:
        return f"503: the daemon is not taking calls now: {first}{' ' + second if second else ''}"
    if status >= 500:
        return f"{status}: the daemon failed on the call: see its log{said}"
    return f"{status}: unexpected answer{said}"


async def post_check(reactor, url: str, call: CheckCall, timeout: float) -> tuple[int, bytes]:
    """POST the call; ``(status, body)``, or a :class:`CheckFailed` saying why no answer."""
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=False)
    client = HTTPClient(Agent(reactor, pool=pool, connectTimeout=timeout))
    headers = {name: [value] for name, value in call.headers.items()}
    try:
        response = await client.post(url, data=call.body, headers=headers, timeout=timeout)
        return response.code, await response.content()
    except error.ConnectionRefusedError:
        raise CheckFailed(
            f"connection refused at {url}: is the daemon running, and listening there (--url)?"
        ) from None
    except (defer.CancelledError, error.TimeoutError, defer.TimeoutError):
        raise CheckFailed(f"no answer from {url} within {timeout:g} s") from None
    except error.DNSLookupError:
        raise CheckFailed(f"cannot resolve the host of {url}") from None
    except Exception as failure:
        raise CheckFailed(f"the call to {url} failed: {describe_failure(failure)}") from None
    finally:
        await pool.closeCachedConnections()


def report_status(body: bytes) -> str | None:
    """The AMQP action's status in an actions report (``published``, ``queued``…)."""
    try:
        report = json.loads(body)
    except ValueError:
        return None
    if not isinstance(report, dict):
        return None
    for action in report.get("actions") or ():
        if isinstance(action, dict) and action.get("action") == "AMQPAction":
            return action.get("status")
    return None


async def bind_check_queue(client, channel, config: Config, routing_key: str):
    """A temporary queue bound to the exchange with ``routing_key``: its txamqp queue.

    (The connection declared the exchange, as the daemon's does.)
    """
    exchange = config.broker.exchange
    try:
        declared = await channel.queue_declare(exclusive=True, auto_delete=True)
        await channel.queue_bind(queue=declared.queue, exchange=exchange, routing_key=routing_key)
        reply = await channel.basic_consume(queue=declared.queue, no_ack=True)
    except Exception as failure:
        raise CheckFailed(
            f"cannot bind a queue to {exchange}: {describe_failure(failure)}"
        ) from None
    return await client.queue(reply.consumer_tag)


def matches(message, publication: Publication, call: CheckCall) -> bool:
    if call.message_id is not None:
        return message.content.properties.get("message-id") == call.message_id
    try:
        body = parse_notification(message.content.body)
    except ValueError:
        return False
    return body.get("rawContent") == publication.notification.rawContent


async def wait_for_message(reactor, queue, publication: Publication, call: CheckCall, timeout):
    """The message of the check call, or None after ``timeout`` seconds."""
    from txamqp.queue import Empty

    deadline = reactor.seconds() + timeout
    while True:
        left = deadline - reactor.seconds()
        if left <= 0:
            return None
        try:
            message = await queue.get(timeout=left)
        except Empty:
            return None
        if matches(message, publication, call):
            return message


def not_seen(config: Config, routing_key: str, status: str | None, timeout: float) -> str:
    exchange = config.broker.exchange
    where = f"on the exchange {exchange} at {config.broker.describe()}"
    base = (
        f"the daemon accepted the call but its notification ({routing_key}) was not seen "
        f"{where} within {timeout:g} s"
    )
    if status == "queued":
        return (
            base + ": the daemon answered queued, it is not connected to the broker (see /health)"
        )
    if status == "failed":
        return base + ": the daemon could not store it (outbox full or unavailable)"
    return (
        base + ": does the daemon publish on another broker or exchange than this configuration's?"
    )


async def check_main(reactor, config: Config, args: argparse.Namespace) -> None:
    gate, door = args.gate, args.door
    service = config.service(gate, door)
    nonce = secrets.token_hex(8)
    call = gate_class(gate).check_call(door, service, nonce)
    try:
        publication = expected_publication(config, gate, door, call)
    except GateError:
        publication = None
    url = door_url(args.url, gate, door)
    client, channel = await connected(start_connection(reactor, config), config)
    try:
        queue = None
        if publication is not None:
            routing_key = publication.notification.routing_key
            queue = await bind_check_queue(client, channel, config, routing_key)
        status, body = await post_check(reactor, url, call, args.timeout)
        if not 200 <= status < 300:
            raise CheckFailed(diagnose(config, gate, door, service, status, body))
        amqp = report_status(body)
        say(f"{url} answered {status}" + (f", {amqp}." if amqp else "."))
        if publication is None:
            raise CheckFailed(
                "the daemon accepted the call, but the credentials file and analyzers here "
                f"give no notification for it: does the daemon run with {config.path}?"
            )
        message = await wait_for_message(reactor, queue, publication, call, args.timeout)
        if message is None:
            raise CheckFailed(not_seen(config, routing_key, amqp, args.timeout))
        notification = parse_notification(message.content.body)
        timestamp = message.content.properties.get("timestamp") or time.time()
        say(format_notification(notification, timestamp, wants_colour(sys.stdout)))
    finally:
        await close_connection(client)


def command_check(args: argparse.Namespace) -> int:
    args.gate = gate_named(args.gate)
    config = load_config(config_path(args.config))
    return run_react(reporting_errors, check_main, config, args)


# Command line ---------------------------------------------------------------------


def add_commands(commands) -> None:
    """``door add|list|remove|rotate|check``."""
    door = commands.add_parser("door", help="open, list, close, rotate and check doors")
    actions = door.add_subparsers(required=True, metavar="ACTION")
    gate_help = f"the gate: {', '.join(gate_names())} (any case)"

    def door_action(name: str, help: str, door: str = "the door") -> argparse.ArgumentParser:
        """An action on one door: the gate and the door come first."""
        parser = actions.add_parser(name, help=help)
        parser.add_argument("gate", help=gate_help)
        parser.add_argument("door", help=door)
        return parser

    add = door_action(
        "add",
        "open a door: a new secret in the credentials file, the daemon reloaded",
        door="the door (the project)",
    )
    add.add_argument(
        "--public-url",
        type=public_url,
        metavar="URL",
        help="where senders reach the center (default: [gate] public_url)",
    )
    add.add_argument(
        "--secret-file",
        metavar="PATH",
        help="write the secret to this new file (mode 0600) and name it in the entry",
    )
    add.add_argument("--instance", type=http_url, metavar="URL", help="Phabricator: the instance")
    add.add_argument(
        "--api-token-file", metavar="PATH", help="Phabricator: the file of its Conduit API token"
    )
    add.add_argument(
        "--hmac-key-file",
        metavar="PATH",
        help="Phabricator: the file of its Herald webhook's HMAC key",
    )
    add.set_defaults(command=command_add)

    listing = actions.add_parser("list", help="the doors, where their secrets come from")
    listing.set_defaults(command=command_list)

    remove = door_action("remove", "close a door; the daemon reloaded")
    remove.set_defaults(command=command_remove)

    rotate = door_action("rotate", "a new secret; the previous one accepted for a grace period")
    rotate.add_argument(
        "--grace",
        type=duration,
        default=duration(DEFAULT_GRACE),
        metavar="DURATION",
        help=f"how long the previous secret stays accepted: 90s, 15m, 24h, 7d "
        f"(default {DEFAULT_GRACE})",
    )
    rotate.add_argument(
        "--hmac-key-file",
        metavar="PATH",
        help="Phabricator: a new file with the Herald webhook's new HMAC key",
    )
    rotate.add_argument(
        "--force",
        action="store_true",
        help="rotate even while a previous secret is still accepted (it stops working)",
    )
    rotate.set_defaults(command=command_rotate)

    check = door_action(
        "check", "make the call the sender would make and wait for its notification"
    )
    check.add_argument(
        "--url",
        type=http_url,
        default=DEFAULT_CHECK_URL,
        help=f"the daemon (default {DEFAULT_CHECK_URL})",
    )
    add_timeout(check, "for the answer, then for the notification (default 10)", default=10.0)
    check.set_defaults(command=command_check)
