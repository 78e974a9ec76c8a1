"""``/metrics``: what Prometheus scrapes, after real gate calls."""

from __future__ import annotations

import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import test_broker
from tests.helpers import closed_port

NOTIFICATION = {"service": "Deployer", "group": "ops", "type": "deploy"}


async def scrape(daemon) -> dict[tuple[str, tuple], float]:
    response = await treq.get(daemon.url + "/metrics")
    assert response.code == 200
    text = (await response.content()).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@pytest_twisted.ensureDeferred
async def test_calls_notifications_and_broker_state(daemon_factory, consumer):
    daemon = await daemon_factory()
    for _ in range(3):
        response, _ = await daemon.post("/gate/Notification/Acme", NOTIFICATION)
        assert response.code == 200
    response, _ = await daemon.post("/gate/Notification/Acme", b"[]")
    assert response.code == 400
    await consumer.drain()

    samples = await scrape(daemon)
    calls = "notifications_gate_calls_total"
    assert samples[(calls, (("code", "200"), ("door", "Acme"), ("gate", "Notification")))] == 3
    assert samples[(calls, (("code", "400"), ("door", "Acme"), ("gate", "Notification")))] == 1
    assert samples[("notifications_notifications_total", (("outcome", "published"),))] == 3
    assert samples[("notifications_broker_connected", ())] == 1
    assert samples[("notifications_broker_confirmed_total", ())] == 3
    buckets = "notifications_gate_call_seconds_count"
    # The three accepted calls and the refused one: every call that reached the gate.
    assert samples[(buckets, (("gate", "Notification"),))] == 4


@pytest_twisted.ensureDeferred
async def test_outbox_figures_while_the_broker_is_away(daemon_factory, broker):
    daemon = await daemon_factory(
        wait_for_broker=False, broker_config=test_broker(broker.exchange, port=closed_port())
    )
    for _ in range(4):
        response, _ = await daemon.post("/gate/Notification/Acme", NOTIFICATION)
        assert response.code == 200
    await daemon.dispatcher._refresh_oldest()
    samples = await scrape(daemon)
    assert samples[("notifications_broker_connected", ())] == 0
    assert samples[("notifications_outbox_depth", ())] == 4
    assert samples[("notifications_outbox_oldest_age_seconds", ())] >= 0
    assert samples[("notifications_notifications_total", (("outcome", "queued"),))] == 4


@pytest_twisted.ensureDeferred
async def test_caller_chosen_doors_cannot_grow_the_series_without_bound(daemon_factory):
    daemon = await daemon_factory()
    for index in range(60):
        response, _ = await daemon.post(f"/gate/Notification/door{index}", b"[]")
        assert response.code == 400
    samples = await scrape(daemon)
    doors = {
        dict(labels)["door"]
        for (name, labels) in samples
        if name == "notifications_gate_calls_total" and dict(labels)["gate"] == "Notification"
    }
    assert len(doors) == 51
    assert "other" in doors
    assert (
        samples[
            (
                "notifications_gate_calls_total",
                (("code", "400"), ("door", "other"), ("gate", "Notification")),
            )
        ]
        == 10
    )


@pytest_twisted.ensureDeferred
async def test_caller_chosen_services_cannot_grow_the_series(daemon_factory, consumer):
    # The Notification gate's report names the caller's service; the metrics
    # must name the gate of the URL, or every new service is a new series.
    daemon = await daemon_factory()
    services = [f"svc-{index}" for index in range(5)]
    for service in services:
        response, answer = await daemon.post(
            "/gate/Notification/Acme", {**NOTIFICATION, "service": service}
        )
        assert response.code == 200, answer
    await consumer.drain()
    samples = await scrape(daemon)
    gates = {
        dict(labels)["gate"]
        for (name, labels) in samples
        if name.startswith(("notifications_gate_calls", "notifications_gate_call_seconds"))
    }
    assert gates == {"Notification"}
    calls = "notifications_gate_calls_total"
    assert samples[(calls, (("code", "200"), ("door", "Acme"), ("gate", "Notification")))] == 5
    latency = "notifications_gate_call_seconds_count"
    assert samples[(latency, (("gate", "Notification"),))] == 5
