"""The AMQP 0-9-1 protocol description that txamqp needs, carried by this package.

txamqp builds its codec and its channel methods from a ``Spec`` object, and that
object can only be made from an AMQP specification XML document — which txamqp
does not ship. Rather than depending on a system package or vendoring somebody
else's XML file, we keep the protocol facts here, as a compact table written for
this project, and generate from it the (small) XML subset that
``txamqp.spec.load_string`` reads.

The table is the whole of AMQP 0-9-1 plus the RabbitMQ extensions we may meet on
the wire: the ``confirm`` class (publisher confirms), ``basic.nack``, the broker
sending ``basic.ack`` / ``basic.nack`` / ``basic.cancel`` to us, ``exchange.bind`` /
``exchange.unbind``, and the ``auto-delete`` / ``internal`` fields of
``exchange.declare`` (deprecated by 0-9-1, used by RabbitMQ). We only use a few
methods, but a frame for a method missing from the table would make txamqp fail to
decode it and drop the connection, so carrying everything is the safer choice.

Names, indexes and field order follow the official specification exactly: field
order *is* the wire format, and txamqp derives the keyword arguments of the
generated channel methods from the field names (``no-wait`` becomes ``no_wait``,
``reserved-1`` becomes ``reserved_1``, ``global`` becomes ``global_``).
``tests/test_amqp_spec.py`` checks the table against RabbitMQ's own spec file.

.. warning:: txamqp decides whether to wait for a method's response by looking for
   a field literally named ``nowait``. In 0-9-1 the field is called ``no-wait``
   (only RabbitMQ's ``confirm.select`` says ``nowait``), so txamqp never sees it:
   calling e.g. ``exchange_declare(..., no_wait=True)`` makes txamqp wait for a
   ``declare-ok`` the broker will never send, and the call hangs forever. Callers
   must leave ``no_wait`` false (``confirm_select(nowait=True)`` does work).
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import txamqp.spec

#: Wire primitives txamqp's codec knows (``Codec.encode_<type>``). Every field of
#: the table uses one of these directly: the official spec's named domains
#: (``exchange-name``, ``delivery-tag``…) only add checks txamqp ignores.
PRIMITIVE_TYPES = frozenset(
    ("bit", "octet", "short", "long", "longlong", "shortstr", "longstr", "table", "timestamp")
)

#: Protocol version announced in the XML (txamqp sends ``AMQP 0 0 9 1`` from it).
VERSION = (0, 9, 1)
PORT = 5672

# Constants as "name value [class]". txamqp needs the frame-* ones (it finds the
# frame types and the frame-end octet by name); the reply codes make broker
# errors readable.
_CONSTANTS_TEXT = """
    frame-method          1
    frame-header          2
    frame-body            3
    frame-heartbeat       8
    frame-min-size        4096
    frame-end             206
    reply-success         200
    content-too-large     311  soft-error
    no-consumers          313  soft-error
    connection-forced     320  hard-error
    invalid-path          402  hard-error
    access-refused        403  soft-error
    not-found             404  soft-error
    resource-locked       405  soft-error
    precondition-failed   406  soft-error
    frame-error           501  hard-error
    syntax-error          502  hard-error
    command-invalid       503  hard-error
    channel-error         504  hard-error
    unexpected-frame      505  hard-error
    resource-error        506  hard-error
    not-allowed           530  hard-error
    not-implemented       540  hard-error
    internal-error        541  hard-error
"""


def _parse_constants(text: str) -> tuple[tuple[str, int, str | None], ...]:
    rows = []
    for line in text.strip().splitlines():
        name, value, *klass = line.split()
        rows.append((name, int(value), klass[0] if klass else None))
    return tuple(rows)


#: ``(name, value, error class or None)``, in the order of the official spec.
CONSTANTS = _parse_constants(_CONSTANTS_TEXT)


def _parse_fields(text: str) -> tuple[tuple[str, str], ...]:
    """Split ``"name:type name:type"`` into ``((name, type), ...)``, checking the types."""
    fields = []
    for item in text.split():
        name, _, type_ = item.partition(":")
        if type_ not in PRIMITIVE_TYPES:
            raise ValueError(f"field {name!r}: unknown AMQP type {type_!r}")
        fields.append((name, type_))
    return tuple(fields)


@dataclass(frozen=True)
class MethodDef:
    """One method of an AMQP class, as the table states it."""

    name: str
    index: int
    fields: tuple[tuple[str, str], ...]
    synchronous: bool
    content: bool
    responses: tuple[str, ...]


@dataclass(frozen=True)
class ClassDef:
    """One AMQP class: its content properties (``fields``) and its methods."""

    name: str
    index: int
    handler: str
    fields: tuple[tuple[str, str], ...]
    methods: tuple[MethodDef, ...]


def _m(
    name: str,
    index: int,
    fields: str = "",
    *,
    sync: bool = False,
    content: bool = False,
    responses: tuple[str, ...] = (),
) -> MethodDef:
    return MethodDef(name, index, _parse_fields(fields), sync, content, responses)


def _c(name: str, index: int, handler: str, methods: list[MethodDef], fields: str = "") -> ClassDef:
    return ClassDef(name, index, handler, _parse_fields(fields), tuple(methods))


# Shorthands for the field lists several methods share.
_CLOSE = "reply-code:short reply-text:shortstr class-id:short method-id:short"
_EXCHANGE_BIND = (
    "reserved-1:short destination:shortstr source:shortstr routing-key:shortstr "
    "no-wait:bit arguments:table"
)

#: Every class and method, in the order of the official spec (ids are what goes on
#: the wire; the order only matters for readability and for the comparison test).
#: ``responses`` are what txamqp waits for after sending the method; a method the
#: broker sends on its own (``basic.deliver``, ``basic.return``, a broker-side
#: ``basic.ack``/``basic.nack``/``basic.cancel``, ``channel.close``,
#: ``connection.close``) is no one's response, so txamqp hands it to the delegate.
# The table is laid out by hand (one method per entry); keep the formatter away from it.
# fmt: off
CLASSES: tuple[ClassDef, ...] = (
    _c("connection", 10, "connection", [
        _m("start", 10, "version-major:octet version-minor:octet server-properties:table "
           "mechanisms:longstr locales:longstr", sync=True, responses=("start-ok",)),
        _m("start-ok", 11, "client-properties:table mechanism:shortstr response:longstr "
           "locale:shortstr", sync=True),
        _m("secure", 20, "challenge:longstr", sync=True, responses=("secure-ok",)),
        _m("secure-ok", 21, "response:longstr", sync=True),
        _m("tune", 30, "channel-max:short frame-max:long heartbeat:short", sync=True,
           responses=("tune-ok",)),
        _m("tune-ok", 31, "channel-max:short frame-max:long heartbeat:short", sync=True),
        _m("open", 40, "virtual-host:shortstr reserved-1:shortstr reserved-2:bit", sync=True,
           responses=("open-ok",)),
        _m("open-ok", 41, "reserved-1:shortstr", sync=True),
        _m("close", 50, _CLOSE, sync=True, responses=("close-ok",)),
        _m("close-ok", 51, sync=True),
    ]),
    _c("channel", 20, "channel", [
        _m("open", 10, "reserved-1:shortstr", sync=True, responses=("open-ok",)),
        _m("open-ok", 11, "reserved-1:longstr", sync=True),
        _m("flow", 20, "active:bit", sync=True, responses=("flow-ok",)),
        _m("flow-ok", 21, "active:bit"),
        _m("close", 40, _CLOSE, sync=True, responses=("close-ok",)),
        _m("close-ok", 41, sync=True),
    ]),
    _c("exchange", 40, "channel", [
        # RabbitMQ: "auto-delete" and "internal" instead of 0-9-1's reserved-2/-3.
        _m("declare", 10, "reserved-1:short exchange:shortstr type:shortstr passive:bit "
           "durable:bit auto-delete:bit internal:bit no-wait:bit arguments:table", sync=True,
           responses=("declare-ok",)),
        _m("declare-ok", 11, sync=True),
        _m("delete", 20, "reserved-1:short exchange:shortstr if-unused:bit no-wait:bit",
           sync=True, responses=("delete-ok",)),
        _m("delete-ok", 21, sync=True),
        # RabbitMQ exchange-to-exchange bindings; note unbind-ok is 51, not 41.
        _m("bind", 30, _EXCHANGE_BIND, sync=True, responses=("bind-ok",)),
        _m("bind-ok", 31, sync=True),
        _m("unbind", 40, _EXCHANGE_BIND, sync=True, responses=("unbind-ok",)),
        _m("unbind-ok", 51, sync=True),
    ]),
    _c("queue", 50, "channel", [
        _m("declare", 10, "reserved-1:short queue:shortstr passive:bit durable:bit "
           "exclusive:bit auto-delete:bit no-wait:bit arguments:table", sync=True,
           responses=("declare-ok",)),
        _m("declare-ok", 11, "queue:shortstr message-count:long consumer-count:long",
           sync=True),
        _m("bind", 20, "reserved-1:short queue:shortstr exchange:shortstr "
           "routing-key:shortstr no-wait:bit arguments:table", sync=True,
           responses=("bind-ok",)),
        _m("bind-ok", 21, sync=True),
        _m("unbind", 50, "reserved-1:short queue:shortstr exchange:shortstr "
           "routing-key:shortstr arguments:table", sync=True, responses=("unbind-ok",)),
        _m("unbind-ok", 51, sync=True),
        _m("purge", 30, "reserved-1:short queue:shortstr no-wait:bit", sync=True,
           responses=("purge-ok",)),
        _m("purge-ok", 31, "message-count:long", sync=True),
        _m("delete", 40, "reserved-1:short queue:shortstr if-unused:bit if-empty:bit "
           "no-wait:bit", sync=True, responses=("delete-ok",)),
        _m("delete-ok", 41, "message-count:long", sync=True),
    ]),
    _c("basic", 60, "channel", fields=(
        # The 14 content-header properties, in property-flag order; txamqp keys them
        # by these names (content["delivery-mode"]). The 14th, which AMQP 0-9 called
        # "cluster-id" (and RabbitMQ's clients still do), is named "reserved" by the
        # 0-9-1 spec: it must stay empty.
        "content-type:shortstr content-encoding:shortstr headers:table "
        "delivery-mode:octet priority:octet correlation-id:shortstr reply-to:shortstr "
        "expiration:shortstr message-id:shortstr timestamp:timestamp type:shortstr "
        "user-id:shortstr app-id:shortstr reserved:shortstr"
    ), methods=[
        _m("qos", 10, "prefetch-size:long prefetch-count:short global:bit", sync=True,
           responses=("qos-ok",)),
        _m("qos-ok", 11, sync=True),
        _m("consume", 20, "reserved-1:short queue:shortstr consumer-tag:shortstr "
           "no-local:bit no-ack:bit exclusive:bit no-wait:bit arguments:table", sync=True,
           responses=("consume-ok",)),
        _m("consume-ok", 21, "consumer-tag:shortstr", sync=True),
        # Also sent by RabbitMQ when a consumed queue goes away (consumer cancel notify).
        _m("cancel", 30, "consumer-tag:shortstr no-wait:bit", sync=True,
           responses=("cancel-ok",)),
        _m("cancel-ok", 31, "consumer-tag:shortstr", sync=True),
        _m("publish", 40, "reserved-1:short exchange:shortstr routing-key:shortstr "
           "mandatory:bit immediate:bit", content=True),
        _m("return", 50, "reply-code:short reply-text:shortstr exchange:shortstr "
           "routing-key:shortstr", content=True),
        _m("deliver", 60, "consumer-tag:shortstr delivery-tag:longlong redelivered:bit "
           "exchange:shortstr routing-key:shortstr", content=True),
        _m("get", 70, "reserved-1:short queue:shortstr no-ack:bit", sync=True,
           responses=("get-ok", "get-empty")),
        _m("get-ok", 71, "delivery-tag:longlong redelivered:bit exchange:shortstr "
           "routing-key:shortstr message-count:long", sync=True, content=True),
        _m("get-empty", 72, "reserved-1:shortstr", sync=True),
        # With publisher confirms, the broker acks (and nacks) our publishes.
        _m("ack", 80, "delivery-tag:longlong multiple:bit"),
        _m("reject", 90, "delivery-tag:longlong requeue:bit"),
        _m("recover-async", 100, "requeue:bit"),
        # As in the official spec, recover names no response, so txamqp does not wait
        # for the broker's recover-ok and hands it to the delegate instead: a caller
        # of basic_recover needs a delegate with a basic_recover_ok method.
        _m("recover", 110, "requeue:bit"),
        _m("recover-ok", 111, sync=True),
        _m("nack", 120, "delivery-tag:longlong multiple:bit requeue:bit"),
    ]),
    _c("tx", 90, "channel", [
        _m("select", 10, sync=True, responses=("select-ok",)),
        _m("select-ok", 11, sync=True),
        _m("commit", 20, sync=True, responses=("commit-ok",)),
        _m("commit-ok", 21, sync=True),
        _m("rollback", 30, sync=True, responses=("rollback-ok",)),
        _m("rollback-ok", 31, sync=True),
    ]),
    # RabbitMQ publisher confirms. The field really is "nowait" here.
    _c("confirm", 85, "channel", [
        _m("select", 10, "nowait:bit", sync=True, responses=("select-ok",)),
        _m("select-ok", 11, sync=True),
    ]),
)
# fmt: on


def build_xml() -> str:
    """Return the table as an AMQP spec XML document that ``txamqp.spec.load_string`` reads.

    Only what txamqp reads is emitted: constants, classes (``index``, ``handler``,
    property fields), methods (``index``, ``synchronous``, ``content``,
    ``<response>``, fields with a primitive ``type``). Each method also gets a
    one-line text, because txamqp turns it into the generated method's docstring
    and fails on a method without any text.
    """
    major, minor, revision = VERSION
    root = ET.Element(
        "amqp", major=str(major), minor=str(minor), revision=str(revision), port=str(PORT)
    )
    for name, value, klass in CONSTANTS:
        constant = ET.SubElement(root, "constant", name=name, value=str(value))
        if klass is not None:
            constant.set("class", klass)
    for cls in CLASSES:
        class_el = ET.SubElement(
            root, "class", name=cls.name, index=str(cls.index), handler=cls.handler
        )
        _add_fields(class_el, cls.fields)
        for method in cls.methods:
            method_el = ET.SubElement(class_el, "method", name=method.name, index=str(method.index))
            if method.synchronous:
                method_el.set("synchronous", "1")
            if method.content:
                method_el.set("content", "1")
            method_el.text = f"AMQP {cls.name}.{method.name} ({cls.index}/{method.index})."
            for response in method.responses:
                ET.SubElement(method_el, "response", name=response)
            _add_fields(method_el, method.fields)
    return ET.tostring(root, encoding="unicode")


def _add_fields(parent: ET.Element, fields: tuple[tuple[str, str], ...]) -> None:
    for name, type_ in fields:
        ET.SubElement(parent, "field", name=name, type=type_)


@functools.lru_cache(maxsize=1)
def load_spec() -> txamqp.spec.Spec:
    """Return the txamqp ``Spec`` for AMQP 0-9-1 with RabbitMQ extensions.

    Built once and shared: txamqp creates a class per spec, and an ``AMQClient``
    only needs it read-only.
    """
    return txamqp.spec.load_string(build_xml(), specfilename="<notifications.amqp.spec>")
