"""Prometheus metrics of the daemon, served at ``/metrics``.

A registry of our own (no global state): counters and a histogram updated
by the call handler, and a collector that reads the outbox and broker state
at scrape time. prometheus_client's Twisted resource renders the page on the
reactor's thread pool, so the collector only reads plain numbers.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.twisted import MetricsResource

from .report import AMQP

#: Distinct doors labelled per gate; past it, calls are counted under "other".
#: Notification doors are chosen by callers, and every label value is a series.
MAX_DOORS = 50

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class StateCollector:
    """Outbox and broker figures, read from the dispatcher when scraped."""

    def __init__(self, dispatcher, clock):
        self.dispatcher = dispatcher
        self.clock = clock

    def collect(self):
        dispatcher = self.dispatcher
        publisher = dispatcher.publisher
        yield GaugeMetricFamily(
            "notifications_outbox_depth",
            "Notifications stored and not yet confirmed by the broker",
            value=dispatcher.outbox.depth,
        )
        oldest = dispatcher.oldest_created
        yield GaugeMetricFamily(
            "notifications_outbox_oldest_age_seconds",
            "Age of the oldest notification waiting in the outbox (0 when empty)",
            value=0 if oldest is None else max(0.0, self.clock.seconds() - oldest),
        )
        yield GaugeMetricFamily(
            "notifications_outbox_in_flight",
            "Notifications published and waiting for the broker's confirm",
            value=dispatcher.in_flight,
        )
        yield CounterMetricFamily(
            "notifications_broker_confirmed",
            "Notifications confirmed by the broker",
            value=dispatcher.published,
        )
        yield CounterMetricFamily(
            "notifications_broker_nacked",
            "Notifications the broker refused (basic.nack), then retried",
            value=dispatcher.nacked,
        )
        yield GaugeMetricFamily(
            "notifications_broker_connected",
            "1 when the connection to the broker is up",
            value=1 if publisher.connected else 0,
        )
        node = GaugeMetricFamily(
            "notifications_broker_node",
            "The broker node the daemon is connected to (1; no series while disconnected)",
            labels=["node"],
        )
        if publisher.node is not None:
            # A configured node name: the label values are bounded by the configuration.
            node.add_metric([publisher.node], 1)
        yield node
        yield CounterMetricFamily(
            "notifications_broker_reconnects",
            "Connections to the broker made after the first one",
            value=max(0, publisher.connections - 1),
        )
        yield CounterMetricFamily(
            "notifications_broker_unroutable",
            "Notifications no queue was bound for (basic.return)",
            value=publisher.unroutable,
        )


class ReadersCollector:
    """The event streams' and the subscriptions' figures, read when scraped.

    Subscriptions are labelled by name: names come from the configuration, so
    the series are bounded.
    """

    def __init__(self, events=None, subscriptions=None):
        self.events = events
        self.subscriptions = subscriptions

    def collect(self):
        events = self.events
        if events is not None:
            yield GaugeMetricFamily(
                "notifications_event_streams", "Event streams open", value=len(events.streams)
            )
            yield CounterMetricFamily(
                "notifications_event_streams_opened", "Event streams started", value=events.opened
            )
            yield CounterMetricFamily(
                "notifications_events_sent",
                "Notifications sent on event streams",
                value=events.sent,
            )
            yield CounterMetricFamily(
                "notifications_event_streams_too_slow",
                "Event stream clients disconnected because they read too slowly",
                value=events.too_slow,
            )
            refused = CounterMetricFamily(
                "notifications_event_requests_refused",
                "Requests to /events answered without a stream, by status code",
                labels=["code"],
            )
            for code, count in sorted(events.refused.items()):
                refused.add_metric([str(code)], count)
            yield refused
        if self.subscriptions is None:
            return
        figures = self.subscriptions.figures()
        counters = {
            "delivered": "Notifications a receiver took (2xx)",
            "retried": "Failed attempts followed by another one",
            "dead_lettered": "Notifications moved to the dead-letter queue after max_attempts",
        }
        gauges = {
            "waiting": "Notifications in the subscription's queue (read from the broker)",
            "dead": "Notifications in the subscription's dead-letter queue",
        }
        for kind, described in ((CounterMetricFamily, counters), (GaugeMetricFamily, gauges)):
            for name, description in described.items():
                family = kind(
                    f"notifications_subscription_{name}", description, labels=["subscription"]
                )
                for subscription, kept in figures.items():
                    value = getattr(kept, name)
                    # A queue not read yet (a counter always has a value): no
                    # sample rather than a wrong one.
                    if value is not None:
                        family.add_metric([subscription], value)
                yield family


class Metrics:
    """The daemon's metrics and the resource that serves them."""

    def __init__(self, dispatcher, clock, known_doors=(), events=None, subscriptions=None):
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "notifications_gate_calls",
            "Gate calls by gate, door and status code",
            ["gate", "door", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "notifications_gate_call_seconds",
            "Time from a gate call's body to its answer",
            ["gate"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.notifications = Counter(
            "notifications_notifications",
            "Notifications by outcome: published, queued, failed, duplicate",
            ["outcome"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "notifications_gate_refusals",
            "Gate calls refused, by gate (of the URL) and reason (reference §2.6)",
            ["gate", "reason"],
            registry=self.registry,
        )
        self.side_actions = Counter(
            "notifications_side_actions",
            "Side actions (calls to other services) by kind and outcome",
            ["action", "outcome"],
            registry=self.registry,
        )
        self.registry.register(StateCollector(dispatcher, clock))
        if events is not None or subscriptions is not None:
            self.registry.register(ReadersCollector(events, subscriptions))
        self._doors: dict[str, set[str]] = {}
        #: The labelled series already used, by labels: prometheus_client's
        #: labels() checks, locks and looks up on every call (a measured few
        #: µs per gate call); the number of series is bounded anyway.
        self._series: dict[tuple, Any] = {}
        for gate, door in known_doors:
            self._doors.setdefault(gate, set()).add(door)

    def door_label(self, gate: str, door: str) -> str:
        doors = self._doors.setdefault(gate, set())
        if door in doors:
            return door
        if len(doors) < MAX_DOORS:
            doors.add(door)
            return door
        return "other"

    def _child(self, metric, *labels: str):
        key = (metric, *labels)
        child = self._series.get(key)
        if child is None:
            child = self._series[key] = metric.labels(*labels)
        return child

    def observe_call(self, gate: str, door: str, code: int, seconds: float | None) -> None:
        self._child(self.calls, gate, self.door_label(gate, door), str(code)).inc()
        if seconds is not None:
            self._child(self.latency, gate).observe(seconds)

    def observe_refusal(self, gate: str, reason: str) -> None:
        """A refused call: ``gate`` is a gate of the registry (a URL's gate), ``reason``
        one of the closed set of reasons, so the series are bounded."""
        self._child(self.refusals, gate, reason).inc()

    def observe_report(self, report: dict) -> None:
        if report.get("duplicate"):
            self._child(self.notifications, "duplicate").inc()
        for action in report.get("actions", ()):
            if action.get("action") == AMQP:
                self._child(self.notifications, action.get("status") or "failed").inc()
            else:
                outcome = "error" if action.get("error") else "ok"
                self._child(self.side_actions, action.get("action", "?"), outcome).inc()

    def resource(self):
        return MetricsResource(registry=self.registry)
