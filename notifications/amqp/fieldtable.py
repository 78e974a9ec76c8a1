"""AMQP 0-9-1 field tables, every field type RabbitMQ reads and writes.

A field table (``headers`` of a message, the ``arguments`` of
``queue.declare``, ``basic.consume``, ``queue.bind``, ``exchange.declare``,
the broker's ``server-properties``) is a list of ``name, type octet, value``.
txamqp 0.8.2 only writes long strings and 32-bit integers, and reads only
``S``, ``I``, ``F`` and ``t``: a stream delivery (its ``x-stream-offset`` is
an ``l``) or a dead-lettered message (``x-death``) cannot even be decoded.
:class:`notifications.amqp.connection.AMQPClient` uses this module for every
frame that carries a table.

The types are RabbitMQ's (its "AMQP 0-9-1 errata", which differs from the
0-9-1 specification: ``s`` is a 16-bit integer, not a short string, ``l`` is
a *signed* 64-bit integer, and there is no unsigned 64-bit type nor short
string type):

=====  ====================  ==========================================
octet  wire type             Python value decoded
=====  ====================  ==========================================
``t``  boolean               ``bool``
``b``  signed 8-bit          :class:`Int8`
``B``  unsigned 8-bit        :class:`UInt8`
``s``  signed 16-bit         :class:`Int16`
``u``  unsigned 16-bit       :class:`UInt16`
``I``  signed 32-bit         ``int``
``i``  unsigned 32-bit       :class:`UInt32`
``l``  signed 64-bit         :class:`Int64`
``f``  32-bit float          :class:`Float32`
``d``  64-bit float          ``float``
``D``  decimal               ``decimal.Decimal``
``S``  long string           ``str`` (UTF-8), else :class:`LongString`
``A``  array                 ``list``
``T``  timestamp             :class:`Timestamp`
``F``  table                 ``dict``
``V``  void                  ``None``
``x``  byte array            ``bytes``
=====  ====================  ==========================================

Decoding keeps the wire type: where two wire types share a Python type,
the value comes out as a subclass of ``int``, ``float`` or ``bytes`` naming
its wire type (``Int64(42) == 42``, arithmetic gives plain numbers), so that
encoding a decoded table gives back the same bytes: headers forwarded or
sent back (an ``x-death`` to dead-letter again) keep their types.

Encoding chooses the type from the Python value:

- ``bool`` → ``t``; ``int`` → ``I`` when it fits in 32 signed bits, else
  ``l`` (RabbitMQ reads both as integers wherever it expects a number), and
  a ``ValueError`` past 64 signed bits; the wrappers :class:`Int8` …
  :class:`Int64` force their type (and refuse a value out of its range);
- ``float`` → ``d``, :class:`Float32` → ``f``; only finite ones: RabbitMQ
  closes the connection (``541 INTERNAL_ERROR``) on an infinite or NaN float;
- ``decimal.Decimal`` → ``D`` (a scale of 0 to 255 digits and a signed
  32-bit unscaled value, as RabbitMQ's Java and Python clients read it; the
  broker only carries those 40 bits);
- ``str`` → ``S`` (UTF-8), ``bytes``/``bytearray``/``memoryview`` → ``x``,
  :class:`LongString` → ``S`` with its bytes as they are;
- :class:`Timestamp` → ``T``; an aware ``datetime`` → ``T``, whole seconds
  (the type has no finer resolution: the fraction is dropped); a naive
  datetime is refused, as its instant is unknown;
- a mapping → ``F`` (keys are ``str``, at most 255 bytes in UTF-8), a list or
  tuple → ``A``, ``None`` → ``V``.

A stream queue (RabbitMQ 3.10) keeps only some of this in ``headers``:
arrays and tables are dropped and a decimal makes the broker close the
publisher's connection (see :mod:`notifications.amqp.stream`).

Anything else raises ``TypeError``; a value out of range ``ValueError``;
both name the key path (``'x-death': [0]: 'count': …``). Malformed bytes raise
:class:`FieldTableError` (a ``ValueError``).

Written by hand, as no maintained library gives the codec on its own: pika,
py-amqp and aiormq each carry one inside their own client, and none plugs
into txamqp.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar


class FieldTableError(ValueError):
    """Bytes that are not a well-formed field table."""


class _TypedInt(int):
    """An ``int`` that is sent as one integer wire type."""

    code: ClassVar[bytes]
    minimum: ClassVar[int]
    maximum: ClassVar[int]

    def __new__(cls, value: int = 0):
        number = super().__new__(cls, value)
        if not cls.minimum <= number <= cls.maximum:
            raise ValueError(
                f"{cls.__name__} holds {cls.minimum} to {cls.maximum}, not {int(number)}"
            )
        return number

    def __repr__(self) -> str:
        return f"{type(self).__name__}({int(self)})"


class Int8(_TypedInt):
    """A signed 8-bit integer (``b``)."""

    code, minimum, maximum = b"b", -(2**7), 2**7 - 1


class UInt8(_TypedInt):
    """An unsigned 8-bit integer (``B``)."""

    code, minimum, maximum = b"B", 0, 2**8 - 1


class Int16(_TypedInt):
    """A signed 16-bit integer (``s``)."""

    code, minimum, maximum = b"s", -(2**15), 2**15 - 1


class UInt16(_TypedInt):
    """An unsigned 16-bit integer (``u``)."""

    code, minimum, maximum = b"u", 0, 2**16 - 1


class Int32(_TypedInt):
    """A signed 32-bit integer (``I``): what a plain ``int`` in that range is sent as."""

    code, minimum, maximum = b"I", -(2**31), 2**31 - 1


class UInt32(_TypedInt):
    """An unsigned 32-bit integer (``i``)."""

    code, minimum, maximum = b"i", 0, 2**32 - 1


class Int64(_TypedInt):
    """A signed 64-bit integer (``l``): a stream's ``x-stream-offset``, ``x-death`` counts."""

    code, minimum, maximum = b"l", -(2**63), 2**63 - 1


class Timestamp(_TypedInt):
    """Whole seconds since the Unix epoch (``T``), unsigned 64-bit.

    ``Timestamp.from_datetime(when)`` and ``timestamp.datetime`` convert from
    and to an aware UTC ``datetime`` (seconds beyond year 9999 have none).
    """

    code, minimum, maximum = b"T", 0, 2**64 - 1

    @classmethod
    def from_datetime(cls, when: datetime) -> Timestamp:
        """The whole second ``when`` falls in; ``when`` must be timezone-aware."""
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError(f"a naive datetime has no instant: give it a timezone ({when})")
        return cls((when - _EPOCH) // timedelta(seconds=1))

    @property
    def datetime(self) -> datetime:
        """This instant as an aware UTC datetime."""
        return _EPOCH + timedelta(seconds=int(self))


class Float32(float):
    """A float sent as a 32-bit IEEE 754 number (``f``), rounded to that precision."""

    code: ClassVar[bytes] = b"f"

    def __new__(cls, value: float = 0.0):
        try:
            rounded = struct.unpack("!f", struct.pack("!f", value))[0]
        except OverflowError:
            raise ValueError(f"Float32 holds at most about 3.4e38, not {value}") from None
        return super().__new__(cls, rounded)

    def __repr__(self) -> str:
        return f"Float32({float(self)!r})"


class LongString(bytes):
    """A long string (``S``) whose bytes are not UTF-8, kept as they are."""

    code: ClassVar[bytes] = b"S"

    def __repr__(self) -> str:
        return f"LongString({bytes(self)!r})"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LONG = struct.Struct("!I")
_DECIMAL = struct.Struct("!Bi")

#: Fixed-size scalars: the wrapper to decode into (``None`` for a plain
#: value) and the struct of the value.
_SCALARS: dict[bytes, tuple[type | None, struct.Struct]] = {
    b"b": (Int8, struct.Struct("!b")),
    b"B": (UInt8, struct.Struct("!B")),
    b"s": (Int16, struct.Struct("!h")),
    b"u": (UInt16, struct.Struct("!H")),
    b"I": (None, struct.Struct("!i")),
    b"i": (UInt32, struct.Struct("!I")),
    b"l": (Int64, struct.Struct("!q")),
    b"T": (Timestamp, struct.Struct("!Q")),
    b"f": (Float32, struct.Struct("!f")),
    b"d": (None, struct.Struct("!d")),
}
_ENCODE_STRUCTS = {code: packer for code, (_, packer) in _SCALARS.items()}


# Encoding ------------------------------------------------------------------------------------


def encode_table(table: Mapping[str, Any]) -> bytes:
    """A table as it goes on the wire: its 32-bit byte size, then its fields."""
    body = _table_fields(table)
    return _LONG.pack(len(body)) + body


def encode_value(value: Any) -> bytes:
    """One field value: its type octet, then the value."""
    if value is None:
        return b"V"
    if value is True or value is False:
        return b"t\x01" if value else b"t\x00"
    if isinstance(value, int):
        if isinstance(value, _TypedInt):
            code = value.code
        elif Int32.minimum <= value <= Int32.maximum:
            code = b"I"
        elif Int64.minimum <= value <= Int64.maximum:
            code = b"l"
        else:
            raise ValueError(f"an integer field is at most 64 bits, not {value}")
        return code + _ENCODE_STRUCTS[code].pack(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            # RabbitMQ (Erlang) has no infinite or NaN float: it answers
            # INTERNAL_ERROR and closes the whole connection.
            raise ValueError(
                f"RabbitMQ cannot read a float that is not finite, such as {float(value)}"
            )
        code = b"f" if isinstance(value, Float32) else b"d"
        return code + _ENCODE_STRUCTS[code].pack(value)
    if isinstance(value, str):
        data = _utf8(value)
        return b"S" + _LONG.pack(len(data)) + data
    if isinstance(value, LongString):
        return b"S" + _LONG.pack(len(value)) + value
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return b"x" + _LONG.pack(len(data)) + data
    if isinstance(value, Mapping):
        return b"F" + encode_table(value)
    if isinstance(value, list | tuple):
        body = b"".join(_at(index, encode_value, item) for index, item in enumerate(value))
        return b"A" + _LONG.pack(len(body)) + body
    if isinstance(value, Decimal):
        return b"D" + _encode_decimal(value)
    if isinstance(value, datetime):
        return b"T" + _ENCODE_STRUCTS[b"T"].pack(Timestamp.from_datetime(value))
    raise TypeError(f"no AMQP field type for {type(value).__name__} values")


def _table_fields(table: Mapping[str, Any]) -> bytes:
    parts = []
    for name, value in table.items():
        if not isinstance(name, str):
            raise TypeError(f"a field name is a str, not {type(name).__name__}: {name!r}")
        # surrogateescape: a name decoded from invalid UTF-8 goes back as it came.
        key = _utf8(name, "surrogateescape")
        if len(key) > 255:
            raise ValueError(f"a field name is at most 255 bytes, not {len(key)}: {name[:40]!r}…")
        parts.append(bytes((len(key),)) + key + _at(name, encode_value, value))
    return b"".join(parts)


def _at(where: str | int, encode, value: Any) -> bytes:
    """``encode(value)``, naming ``where`` (a field name, an array index) in its error."""
    try:
        return encode(value)
    except (TypeError, ValueError) as error:
        place = f"[{where}]" if isinstance(where, int) else repr(where)
        # A UnicodeEncodeError cannot be built from a message: raise its base class.
        kind = TypeError if isinstance(error, TypeError) else ValueError
        raise kind(f"{place}: {error}") from None


def _utf8(text: str, errors: str = "strict") -> bytes:
    try:
        return text.encode("utf-8", errors)
    except UnicodeEncodeError as error:
        raise ValueError(f"text that UTF-8 cannot encode: {error.reason}") from None


def _encode_decimal(value: Decimal) -> bytes:
    if not value.is_finite():
        raise ValueError(f"an AMQP decimal is finite, not {value}")
    sign, digits, exponent = value.as_tuple()
    exponent = int(exponent)  # finite: an int, not 'n', 'N' or 'F'
    unscaled = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    if exponent > 0:  # 1E+2: no negative scale on the wire, so 100 at scale 0
        unscaled, exponent = unscaled * 10**exponent, 0
    scale = -exponent
    if scale > 255 or not Int32.minimum <= unscaled <= Int32.maximum:
        raise ValueError(
            f"an AMQP decimal is a signed 32-bit value at a scale of 0 to 255, not {value}"
        )
    return _DECIMAL.pack(scale, unscaled)


# Decoding ------------------------------------------------------------------------------------


def decode_table(data: bytes) -> dict[str, Any]:
    """The table in ``data``: its 32-bit size, then exactly that many bytes of fields."""
    table, end = read_table(data, 0)
    if end != len(data):
        raise FieldTableError(f"{len(data) - end} bytes after the table")
    return table


def read_table(data: bytes | memoryview, offset: int) -> tuple[dict[str, Any], int]:
    """The table at ``offset`` (its size first) and the offset just after it."""
    size, start = _read_size(data, offset)
    return decode_fields(data[start : start + size]), start + size


def decode_fields(data: bytes | memoryview) -> dict[str, Any]:
    """The fields of a table whose size was already read: ``data`` is all of them."""
    table: dict[str, Any] = {}
    offset, end = 0, len(data)
    while offset < end:
        length = data[offset]
        start = offset + 1
        if start + length > end:
            raise FieldTableError("a field name runs past the end of its table")
        name = bytes(data[start : start + length]).decode("utf-8", "surrogateescape")
        table[name], offset = read_value(data, start + length)
    return table


def read_value(data: bytes | memoryview, offset: int) -> tuple[Any, int]:
    """The field value at ``offset`` (its type octet first) and the offset just after it."""
    if offset >= len(data):
        raise FieldTableError("a field has no value")
    code = bytes(data[offset : offset + 1])
    offset += 1
    scalar = _SCALARS.get(code)
    if scalar is not None:
        wrapper, unpacker = scalar
        if offset + unpacker.size > len(data):
            raise FieldTableError(f"a {code.decode()!r} value runs past the end of its table")
        (value,) = unpacker.unpack_from(data, offset)
        return (value if wrapper is None else wrapper(value)), offset + unpacker.size
    if code == b"t":
        if offset >= len(data):
            raise FieldTableError("a 't' value runs past the end of its table")
        return data[offset] != 0, offset + 1
    if code == b"V":
        return None, offset
    if code == b"D":
        if offset + _DECIMAL.size > len(data):
            raise FieldTableError("a 'D' value runs past the end of its table")
        scale, unscaled = _DECIMAL.unpack_from(data, offset)
        return Decimal(unscaled).scaleb(-scale), offset + _DECIMAL.size
    if code in (b"S", b"x", b"A", b"F"):
        size, start = _read_size(data, offset)
        raw = data[start : start + size]
        end = start + size
        if code == b"F":
            return decode_fields(raw), end
        if code == b"A":
            return _decode_array(raw), end
        if code == b"x":
            return bytes(raw), end
        try:
            return bytes(raw).decode(), end
        except UnicodeDecodeError:
            return LongString(raw), end
    raise FieldTableError(f"unknown field type {code!r}")


def _decode_array(data: bytes | memoryview) -> list[Any]:
    items, offset = [], 0
    while offset < len(data):
        item, offset = read_value(data, offset)
        items.append(item)
    return items


def _read_size(data: bytes | memoryview, offset: int) -> tuple[int, int]:
    if offset + 4 > len(data):
        raise FieldTableError("a size runs past the end of its table")
    (size,) = _LONG.unpack_from(data, offset)
    if offset + 4 + size > len(data):
        raise FieldTableError(f"a value of {size} bytes runs past the end of its table")
    return size, offset + 4
