"""Our AMQP 0-9-1 table (notifications.amqp.spec) against RabbitMQ's spec, and on the wire."""

from __future__ import annotations

import inspect
from io import BytesIO
from pathlib import Path

import pytest
import txamqp.spec
from txamqp.codec import Codec
from txamqp.connection import Frame, Header, Method

from notifications.amqp.spec import build_xml, load_spec
from tests.helpers import unavailable

#: RabbitMQ's 0-9-1 spec with its extensions, from the Debian package "amqp-specs"
#: (installed on the CI runners). Only read by the tests, never shipped.
OFFICIAL_SPEC = Path("/usr/share/amqp/specs/0-9-1-rabbit/amqp0-9-1.stripped.extended.xml")


def _load_official(path: Path = OFFICIAL_SPEC) -> txamqp.spec.Spec:
    """Load the reference spec; without it, fail on CI (the check must run there), else skip."""
    if not path.is_file():
        unavailable(f"{path} is missing: install the Debian package amqp-specs")
    return txamqp.spec.load(str(path))


@pytest.fixture(scope="module")
def official() -> txamqp.spec.Spec:
    return _load_official()


def _fields(container) -> list[tuple[str, str]]:
    return [(field.name, field.type) for field in container]


def _classes(spec: txamqp.spec.Spec) -> list[tuple[str, int, str]]:
    return [(klass.name, klass.id, klass.handler) for klass in spec.classes]


def _methods(klass: txamqp.spec.Class) -> list[tuple]:
    return [
        (
            method.name,
            method.id,
            method.synchronous,
            method.content,
            [response.name for response in method.responses],
            _fields(method.fields),
        )
        for method in klass.methods
    ]


# --- against the official spec ------------------------------------------------------------


def test_constants_match_official(official):
    ours = [(c.name, c.id, c.klass) for c in load_spec().constants]
    assert ours == [(c.name, c.id, c.klass) for c in official.constants]


def test_version_matches_official(official):
    assert (load_spec().major, load_spec().minor) == (official.major, official.minor) == (0, 9)


def test_classes_match_official(official):
    assert _classes(load_spec()) == _classes(official)


def test_class_properties_match_official(official):
    ours = load_spec().classes.byname
    for klass in official.classes:
        assert _fields(ours[klass.name].fields) == _fields(klass.fields), klass.name


def test_methods_match_official(official):
    ours = load_spec().classes.byname
    for klass in official.classes:
        assert _methods(ours[klass.name]) == _methods(klass), klass.name


def test_missing_official_spec_fails_on_ci(monkeypatch, tmp_path):
    missing = tmp_path / "no-such-spec.xml"
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="amqp-specs"):
        _load_official(missing)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="amqp-specs"):
        _load_official(missing)


# --- without the official spec ------------------------------------------------------------


def _encode_frame(spec: txamqp.spec.Spec, frame: Frame) -> bytes:
    """Lay a frame out as AMQP 0-9-1 section 4.2.3 says: type, channel, payload, frame-end."""
    stream = BytesIO()
    codec = Codec(stream)
    codec.encode_octet(spec.constants.bypyname[frame.payload.type].id)
    codec.encode_short(frame.channel)
    frame.payload.encode(codec)
    codec.encode_octet(spec.constants.byname["frame-end"].id)
    codec.flush()
    return stream.getvalue()


def _decode_frame(spec: txamqp.spec.Spec, data: bytes) -> Frame:
    codec = Codec(BytesIO(data))
    frame_type = txamqp.spec.pythonize(spec.constants.byid[codec.decode_octet()].name)
    channel = codec.decode_short()
    payload = Frame.DECODERS[frame_type].decode(spec, codec)
    assert codec.decode_octet() == 206
    return Frame(channel, payload)


def test_publish_method_frame_round_trip():
    spec = load_spec()
    publish = spec.classes.byname["basic"].methods.byname["publish"]
    args = (0, "notifications", "github.push", True, False)

    data = _encode_frame(spec, Frame(1, Method(publish, *args)))

    # frame-method, channel 1, then (after the payload size) class 60 / method 40.
    assert data[:3] == b"\x01\x00\x01"
    assert data[7:11] == b"\x00\x3c\x00\x28"
    decoded = _decode_frame(spec, data)
    assert decoded.channel == 1
    assert decoded.payload.method is publish
    assert decoded.payload.args == args


def test_content_header_round_trip():
    spec = load_spec()
    basic = spec.classes.byname["basic"]
    properties = {
        "content-type": "application/json",
        "delivery-mode": 2,
        "message-id": "4f1c0e1e-8b0c-4d5e-9a57-2a3d9c1b7f10",
        "timestamp": 1_700_000_000,
        "app-id": "notifications",
    }

    data = _encode_frame(spec, Frame(1, Header(basic, 0, 42, **properties)))

    assert data[0] == 2  # frame-header
    # class 60, weight 0, body size 42, then the property flags: bit 15 - i for the
    # i-th property (content-type 0, delivery-mode 3, message-id 8, timestamp 9, app-id 12).
    assert data[7:21] == b"\x00\x3c\x00\x00" + (42).to_bytes(8, "big") + b"\x90\xc8"
    decoded = _decode_frame(spec, data).payload
    assert (decoded.klass, decoded.weight, decoded.size) == (basic, 0, 42)
    assert decoded.properties == properties


def test_rabbitmq_extensions_present():
    spec = load_spec()
    confirm = spec.classes.byname["confirm"]
    basic = spec.classes.byname["basic"]
    select = confirm.methods.byname["select"]
    assert (confirm.id, select.id) == (85, 10)
    assert select.responses == [confirm.methods.byname["select-ok"]]
    assert (basic.id, basic.methods.byname["nack"].id) == (60, 120)
    # What the broker sends us on its own must not be mistaken for a reply.
    for name in ("ack", "nack", "deliver", "return", "cancel"):
        assert not basic.methods.byname[name].response, name
    declare = spec.classes.byname["exchange"].methods.byname["declare"]
    assert [f.name for f in declare.fields][5:7] == ["auto-delete", "internal"]
    assert spec.classes.byname["exchange"].methods.byname["unbind-ok"].id == 51


def test_generated_channel_methods_take_spec_names():
    klass = load_spec().klass
    publish = inspect.signature(klass.basic_publish).parameters
    assert list(publish) == [
        "self",
        "reserved_1",
        "exchange",
        "routing_key",
        "mandatory",
        "immediate",
        "content",
    ]
    assert "no_wait" in inspect.signature(klass.exchange_declare).parameters
    assert "nowait" in inspect.signature(klass.confirm_select).parameters


def test_build_xml_is_a_0_9_1_document():
    xml = build_xml()
    assert xml.startswith('<amqp major="0" minor="9" revision="1" port="5672">')


def test_load_spec_is_built_once():
    assert load_spec() is load_spec()
