"""A sixth gate, written in one module and registered for the test only, is
served by the daemon, signed by the command line, listed in ``/config`` and
the status page, accepted in the credentials and ``allow_unsigned``, and
described in ``/openapi.json``: the registry is the only list of gates.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace
from typing import Any

import pytest
import pytest_twisted
import treq

from notifications import gates
from notifications.cli import gate_call, main
from notifications.config import load_config
from notifications.errors import ConfigError
from notifications.gates import gate_names, make_gates
from notifications.gates.base import (
    UNAUTHORIZED,
    Gate,
    GateCall,
    GateDescription,
    GateError,
    Outcome,
    Publication,
    parse_json_object,
)
from notifications.notification import Notification
from notifications.openapi import document
from tests.conftest import make_config, test_broker
from tests.helpers import first_line
from tests.test_openapi import import_schemathesis

SECRET = "toy-door-secret-do-not-print"
SIGNATURE_HEADER = "X-Toy-Signature"


def toy_signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class ToyGate(Gate):
    """``POST /gate/Toy/<door>``: ``{"kind": …, "says": …}``, signed with the door's secret."""

    name = "Toy"
    signs = True
    default_status = "Toy door, never cached."
    openapi = GateDescription(
        summary="A toy's call",
        description="A door with a secret needs X-Toy-Signature, else 403.",
        body={
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["kind"],
                    "properties": {"kind": {"type": "string"}, "says": {"type": "string"}},
                }
            }
        },
        headers=(
            {
                "name": SIGNATURE_HEADER,
                "in": "header",
                "required": False,
                "description": "Hex HMAC-SHA256 of the raw body with the door's secret.",
                "schema": {"type": "string"},
            },
        ),
    )

    def process(self, call: GateCall) -> Outcome:
        service = self.config.service(self.name, call.door)
        if service is not None and service.secret:
            given = call.header(SIGNATURE_HEADER) or ""
            if not hmac.compare_digest(given, toy_signature(service.secret, call.body)):
                raise GateError(403, UNAUTHORIZED, "missing or wrong toy signature")
        elif self.name not in self.config.allow_unsigned:
            raise GateError(403, UNAUTHORIZED, "door has no secret")
        payload = parse_json_object(call.body)
        notification = Notification(
            service=self.name,
            project=call.door,
            group="toys",
            rawContent=payload,
            type=str(payload.get("kind", "toy")),
            text=str(payload.get("says", "")),
            link="",
        )
        outcome = Outcome(gate=self.name, event=notification.type)
        outcome.publications.append(Publication(notification))
        return outcome

    @classmethod
    def call_headers(cls, service, body: bytes, event: str | None) -> dict[str, str]:
        if service is not None and service.secret:
            return {SIGNATURE_HEADER.lower(): toy_signature(service.secret, body)}
        return {}


@pytest.fixture
def toy_gate(monkeypatch):
    """The toy gate, last in the registry for the test's length."""
    monkeypatch.setattr(gates, "GATE_CLASSES", [*gates.GATE_CLASSES, ToyGate])
    return ToyGate


TOY_SERVICES = [{"gate": "Toy", "door": "door", "secret": SECRET}]
PAYLOAD = {"kind": "squeak", "says": "The duck squeaked."}


def test_without_the_fixture_there_is_no_toy(tmp_path):
    # The registry is the list: the credentials naming a Toy door are refused.
    assert "Toy" not in gate_names()
    with pytest.raises(ConfigError, match="unknown gate 'Toy'"):
        make_config(tmp_path, test_broker(), services=TOY_SERVICES)


def test_the_configuration_knows_the_toy(toy_gate, tmp_path):
    config = make_config(
        tmp_path, test_broker(), services=TOY_SERVICES, toml='allow_unsigned = ["Toy"]\n'
    )
    assert config.service("Toy", "door").secret == SECRET
    assert config.allow_unsigned == {"Toy"}
    assert gate_names()[-1] == "Toy"
    assert isinstance(make_gates(config)["Toy"], ToyGate)


@pytest_twisted.ensureDeferred
async def test_the_daemon_serves_the_toy(toy_gate, daemon_factory, consumer):
    daemon = await daemon_factory(services=TOY_SERVICES)
    body = json.dumps(PAYLOAD).encode()
    signed = {SIGNATURE_HEADER: toy_signature(SECRET, body)}

    response, answer = await daemon.post("/gate/Toy/door", body, headers=signed)
    assert response.code == 200, answer
    report = json.loads(answer)
    assert report["gate"] == "Toy"
    [action] = report["actions"]
    assert (action["action"], action["routingKey"]) == ("AMQPAction", "door.toys.toy.squeak")
    assert action["status"] in ("published", "queued")
    message, _ = await consumer.get()
    assert message == {
        "service": "Toy",
        "project": "door",
        "group": "toys",
        "rawContent": PAYLOAD,
        "type": "squeak",
        "text": "The duck squeaked.",
        "link": "",
    }

    response, answer = await daemon.post("/gate/Toy/door", body)  # not signed
    assert response.code == 403
    assert first_line(answer) == UNAUTHORIZED
    await consumer.expect_nothing()

    config_report = json.loads(await (await treq.get(daemon.url + "/config")).content())
    assert config_report["gates"][-1] == "Toy"
    [entry] = [entry for entry in config_report["services"] if entry["gate"] == "Toy"]
    assert {key: entry[key] for key in ("gate", "door", "instance", "status")} == {
        "gate": "Toy",
        "door": "door",
        "instance": None,
        "status": "Toy door, never cached.",
    }
    # Its refusal, which names no reason code, is counted by its status.
    assert entry["refusals"] == {"signature_mismatch": 1}
    assert entry["lastCall"]["status"] == 403
    status = json.loads(await (await treq.get(daemon.url + "/status.json")).content())
    assert status["gates"]["names"][-1] == "Toy"

    openapi = json.loads(await (await treq.get(daemon.url + "/openapi.json")).content())
    assert_toy_described(openapi)


def assert_toy_described(value: dict[str, Any]) -> None:
    post = value["paths"]["/gate/Toy/{door}"]["post"]
    assert post["summary"] == "A toy's call"
    assert post["requestBody"]["content"]["application/json"]["schema"]["required"] == ["kind"]
    headers = [parameter.get("name") for parameter in post["parameters"]]
    assert SIGNATURE_HEADER in headers
    # Its callers sign: no door token, unlike the gates whose callers do not.
    assert {"$ref": "#/components/parameters/token"} not in post["parameters"]
    assert "security" not in post
    assert post["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ToyReport"
    }
    report = value["components"]["schemas"]["ToyReport"]
    assert report["properties"]["gate"] == {"type": "string", "enum": ["Toy"]}
    assert "get" in value["paths"]["/gate/Toy/"]
    assert (
        "Toy"
        in value["components"]["schemas"]["ConfigReport"]["properties"]["gates"]["items"]["enum"]
    )


def test_the_openapi_document_is_valid_with_the_toy(toy_gate):
    schemathesis = import_schemathesis()
    value = document()
    assert_toy_described(value)
    schemathesis.openapi.from_dict(value).validate()


def test_the_command_line_signs_a_call_to_the_toy(toy_gate, tmp_path, capsys):
    make_config(tmp_path, test_broker(), services=TOY_SERVICES)
    path = tmp_path / "notifications.toml"
    body = json.dumps(PAYLOAD).encode()
    call = gate_call(load_config(path, environ={}), "Toy", "door", body, None)
    assert call.header(SIGNATURE_HEADER) == toy_signature(SECRET, body)

    file = tmp_path / "toy.json"
    file.write_bytes(body)
    code = main(["--config", str(path), "payload", "toy", str(file), "door"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert json.loads(out)["text"] == "The duck squeaked."
    assert SECRET not in out

    # The gate checks the signature: the command's call passes, another secret's does not.
    config = load_config(path, environ={})
    gate = make_gates(config)["Toy"]
    assert [p.notification.type for p in gate.process(call).publications] == ["squeak"]
    other = replace(config.service("Toy", "door"), secret="other")
    forged = GateCall(door="door", headers=ToyGate.call_headers(other, body, None), body=body)
    with pytest.raises(GateError) as refused:
        gate.process(forged)
    assert refused.value.status == 403
