"""The HTTP surface around the gates: wrong methods and paths, /status, /config,
feature toggles, and a broker that is not there (docs/reference.rst §2, §6, §7)."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
import treq

from tests.conftest import test_broker
from tests.helpers import closed_port, signed_github_request
from tests.payloads import github_ping

SECRETS = {
    "github": "gh-secret-4815162342",
    "dockerhub": "dh-door-secret-108",
    "phabricator": "api-phab-token-777",
    "trigger": "dh-trigger-token-999",
    "mailgun": "key-mailgun-31337",
    "consumer": "consumer-token-0123456789",
    "subscription": "subscription-signing-secret",
    # A chat webhook's URL holds its own secret in its path.
    "webhook path": "T000/B000/XXXXwebhooksecret",
}
SERVICES = [
    {"gate": "GitHub", "door": "Acme", "secret": SECRETS["github"]},
    {"gate": "DockerHub", "door": "Acme", "secret": SECRETS["dockerhub"]},
    {"gate": "Jenkins", "door": "Acme"},
    {
        "gate": "Phabricator",
        "door": "Acme",
        "instance": "https://phabricator.acme.test",
        "secret": SECRETS["phabricator"],
    },
]
NOTIFICATION = {"service": "Cron", "group": "ops", "type": "backup", "text": "Backed up"}


async def get(daemon, path: str):
    response = await treq.get(daemon.url + path)
    return response, await response.content()


@pytest.mark.parametrize("path", ["/gate/GitHub/Acme", "/gate/GitHub/", "/gate/Jenkins/"])
@pytest_twisted.ensureDeferred
async def test_get_on_a_gate_says_to_post(daemon_factory, path):
    daemon = await daemon_factory(services=SERVICES)
    response, body = await get(daemon, path)
    assert response.code == 405
    assert response.headers.getRawHeaders(b"allow") == [b"POST"]
    assert b"POST" in body
    assert b"gate" in body.lower()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/gate/Nope/x"),
        ("POST", "/gate/Nope/x"),
        ("POST", "/gate/github/Acme"),
        ("POST", "/gate/GitHub/Acme/extra"),
        # Only GET on a gate's root says to POST; a POST there has no door.
        ("POST", "/gate/GitHub/"),
        ("GET", "/nope"),
        ("POST", "/nope"),
        ("GET", "/status/more"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_unknown_paths_are_404(daemon_factory, method, path):
    daemon = await daemon_factory(services=SERVICES)
    response = await treq.request(method, daemon.url + path, data=json.dumps(NOTIFICATION).encode())
    await response.content()
    assert response.code == 404


@pytest_twisted.ensureDeferred
async def test_status_is_alive(daemon_factory):
    daemon = await daemon_factory()
    response, body = await get(daemon, "/status")
    assert response.code == 200
    assert body == b"ALIVE"


@pytest_twisted.ensureDeferred
async def test_home_page_links_status_and_config(daemon_factory):
    daemon = await daemon_factory()
    response, body = await get(daemon, "/")
    assert response.code == 200
    assert b"/status" in body
    assert b"/config" in body


#: What /config says of a door that had no call yet.
NO_CALL = {"lastCall": None, "refusals": {}}


@pytest_twisted.ensureDeferred
async def test_config_report(subscribed, daemon_factory):
    subscribed.append("chat")  # its queues are declared by the daemon: deleted at the end
    daemon = await daemon_factory(
        services=SERVICES,
        tokens={"acme/widgets": SECRETS["trigger"]},
        toml=f'\n[mailgun]\nkey = "{SECRETS["mailgun"]}"\n'
        f'\n[[consumers]]\nname = "dashboard"\ntoken = "{SECRETS["consumer"]}"\n'
        'patterns = ["acme.#"]\n'
        f'\n[[subscriptions]]\nname = "chat"\nsecret = "{SECRETS["subscription"]}"\n'
        f'url = "https://hooks.example.org/services/{SECRETS["webhook path"]}"\n'
        'patterns = ["#"]\n',
    )
    response, body = await get(daemon, "/config")
    assert response.code == 200
    report = json.loads(body)
    assert report == {
        "gates": ["Notification", "DockerHub", "GitHub", "Jenkins", "Phabricator"],
        "features": [
            {"name": "Gate", "enabled": True},
            {"name": "GetConfig", "enabled": True},
            {"name": "ActionsReport", "enabled": True},
        ],
        "services": [
            {"gate": "GitHub", "door": "Acme", "instance": None, "status": "", **NO_CALL},
            {"gate": "DockerHub", "door": "Acme", "instance": None, "status": "", **NO_CALL},
            {"gate": "Jenkins", "door": "Acme", "instance": None, "status": "", **NO_CALL},
            {
                "gate": "Phabricator",
                "door": "Acme",
                "instance": "https://phabricator.acme.test",
                "status": "Projects map not cached.",
                **NO_CALL,
            },
        ],
        "consumers": [{"name": "dashboard", "patterns": ["acme.#"]}],
        "subscriptions": [
            {
                "name": "chat",
                "receiver": "https://hooks.example.org",
                "patterns": ["#"],
                "allowPrivate": False,
                "initialDelay": 1.0,
                "maxDelay": 300.0,
                "maxAttempts": 300,
            }
        ],
        "undeclaredDoors": [],
    }
    for secret in SECRETS.values():
        assert secret.encode() not in body
    assert b"secret" not in body.lower()
    assert b"token" not in body.lower()


@pytest_twisted.ensureDeferred
async def test_get_config_feature_off(daemon_factory):
    daemon = await daemon_factory(services=SERVICES, toml="[features]\nGetConfig = false\n")
    response, body = await get(daemon, "/config")
    assert response.code == 404
    assert SECRETS["github"].encode() not in body
    response, _ = await get(daemon, "/status")
    assert response.code == 200


@pytest_twisted.ensureDeferred
async def test_gate_feature_off(daemon_factory, consumer):
    daemon = await daemon_factory(services=SERVICES, toml="[features]\nGate = false\n")
    response, _ = await daemon.post("/gate/Notification/Acme", NOTIFICATION)
    assert response.code == 404
    body, headers = signed_github_request("ping", github_ping(), SECRETS["github"])
    response, _ = await daemon.post("/gate/GitHub/Acme", body, headers=headers)
    assert response.code == 404
    for path in ("/gate", "/gate/", "/gate/GitHub/"):
        response, _ = await get(daemon, path)
        assert response.code == 404, path
    await consumer.expect_nothing()


@pytest_twisted.ensureDeferred
async def test_actions_report_off(daemon_factory, consumer):
    daemon = await daemon_factory(toml="[features]\nActionsReport = false\n")
    response, body = await daemon.post("/gate/Notification/Acme", NOTIFICATION)
    assert response.code == 200
    assert body == b""
    message, raw = await consumer.get()
    assert message["text"] == "Backed up"
    assert raw.routing_key == "acme.ops.cron.backup"


async def daemon_without_broker(daemon_factory, toml: str = ""):
    """A daemon whose broker is a closed port, and whose outbox holds one notification."""
    return await daemon_factory(
        wait_for_broker=False,
        broker_config=test_broker(port=closed_port()),
        toml=OUTBOX_OF_ONE + toml,
    )


#: Inside [gate]: do not wait long for a confirm that cannot come; then an
#: outbox that is full after one notification, and a short drain on stop.
OUTBOX_OF_ONE = (
    'publish_timeout = 0.2\n[storage]\ndirectory = "var"\nmax_messages = 1\ndrain_timeout = 0.1\n'
)


@pytest_twisted.ensureDeferred
async def test_actions_report_off_even_when_an_action_failed(daemon_factory):
    daemon = await daemon_without_broker(daemon_factory, "[features]\nActionsReport = false\n")
    for _ in range(2):  # queued, then refused by the full outbox
        response, body = await daemon.post("/gate/Notification/Acme", NOTIFICATION)
        assert response.code == 200
        assert body == b""


@pytest_twisted.ensureDeferred
async def test_broker_down(daemon_factory):
    daemon = await daemon_without_broker(daemon_factory)
    exchange = daemon.config.broker.exchange
    response, body = await get(daemon, "/status")
    assert response.code == 200
    assert body == b"ALIVE"

    # Accepted: stored durably, to be published when the broker is back.
    response, body = await daemon.post("/gate/Notification/Acme", NOTIFICATION)
    assert response.code == 200, body
    report = json.loads(body)
    assert report["gate"] == "Cron"
    assert report["door"] == "Acme"
    assert report["actions"] == [
        {
            "action": "AMQPAction",
            "method": "publish",
            "target": exchange,
            "routingKey": "acme.ops.cron.backup",
            "status": "queued",
            "error": None,
        }
    ]

    # The outbox is full: the notification could not be made durable.
    response, body = await daemon.post("/gate/Notification/Acme", NOTIFICATION)
    assert response.code == 503, body
    [action] = json.loads(body)["actions"]
    assert action["action"] == "AMQPAction"
    assert action["routingKey"] == "acme.ops.cron.backup"
    assert action["status"] == "failed"
    assert action["error"]["type"] == "OutboxFull"
    assert isinstance(action["error"]["message"], str)
    assert action["error"]["message"]
