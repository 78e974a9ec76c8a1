"""The HTTP surface outside the gates, and one notification through to RabbitMQ."""

from __future__ import annotations

import json

import pytest_twisted
import treq


@pytest_twisted.ensureDeferred
async def test_status_is_alive(daemon_factory):
    daemon = await daemon_factory()
    response = await treq.get(daemon.url + "/status")
    assert response.code == 200
    assert await response.content() == b"ALIVE"


@pytest_twisted.ensureDeferred
async def test_notification_reaches_the_exchange(daemon_factory, consumer):
    daemon = await daemon_factory()
    response, body = await daemon.post(
        "/gate/Notification/Acme",
        {"service": "Deployer", "group": "ops", "type": "deploy", "text": "Déployé", "link": ""},
    )
    assert response.code == 200, body
    report = json.loads(body)
    assert report["gate"] == "Deployer"
    assert report["actions"][0]["routingKey"] == "acme.ops.deployer.deploy"
    message, raw = await consumer.get()
    assert message == {
        "service": "Deployer",
        "project": "Acme",
        "group": "ops",
        "rawContent": None,
        "type": "deploy",
        "text": "Déployé",
        "link": "",
    }
    assert raw.routing_key == "acme.ops.deployer.deploy"
    properties = raw.content.properties
    assert properties["delivery-mode"] == 2
    assert properties["app-id"] == "notifications"
    assert properties["content-type"] == "application/json"
    assert len(properties["message-id"]) == 36
    assert properties["timestamp"] >= report["created"] - 1
