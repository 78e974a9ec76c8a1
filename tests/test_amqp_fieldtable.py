"""AMQP field tables (notifications.amqp.fieldtable): bytes, round trips, errors.

Each type's encoding is checked against bytes written by hand from the
AMQP 0-9-1 grammar (section 4.2.1) and RabbitMQ's errata table; round trips
go through hypothesis; malformed input is fuzzed. The codec inside txamqp
frames and against the real broker is tested in tests/test_amqp_tables.py.
"""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifications.amqp.fieldtable import (
    FieldTableError,
    Float32,
    Int8,
    Int16,
    Int32,
    Int64,
    LongString,
    Timestamp,
    UInt8,
    UInt16,
    UInt32,
    decode_table,
    encode_table,
    encode_value,
    read_value,
)

# (Python value, its bytes as a field value: type octet then value), from the grammar.
ENCODINGS = [
    (True, b"t\x01"),
    (False, b"t\x00"),
    (Int8(-2), b"b\xfe"),
    (Int8(127), b"b\x7f"),
    (UInt8(255), b"B\xff"),
    (Int16(-2), b"s\xff\xfe"),
    (UInt16(65535), b"u\xff\xff"),
    (1, b"I\x00\x00\x00\x01"),
    (-1, b"I\xff\xff\xff\xff"),
    (2**31 - 1, b"I\x7f\xff\xff\xff"),
    (Int32(5), b"I\x00\x00\x00\x05"),
    (UInt32(2**32 - 1), b"i\xff\xff\xff\xff"),
    (2**31, b"l\x00\x00\x00\x00\x80\x00\x00\x00"),  # past 32 bits: a long
    (-(2**31) - 1, b"l\xff\xff\xff\xff\x7f\xff\xff\xff"),
    (Int64(1), b"l\x00\x00\x00\x00\x00\x00\x00\x01"),
    (Int64(-1), b"l\xff\xff\xff\xff\xff\xff\xff\xff"),
    (Float32(1.0), b"f\x3f\x80\x00\x00"),
    (1.0, b"d\x3f\xf0\x00\x00\x00\x00\x00\x00"),
    (-2.5, b"d\xc0\x04\x00\x00\x00\x00\x00\x00"),
    (Decimal("1.23"), b"D\x02\x00\x00\x00\x7b"),  # scale 2, value 123
    (Decimal("-1.5"), b"D\x01\xff\xff\xff\xf1"),  # scale 1, value -15
    (Decimal("1E+2"), b"D\x00\x00\x00\x00\x64"),  # no negative scale: 100 at scale 0
    ("", b"S\x00\x00\x00\x00"),
    ("é", b"S\x00\x00\x00\x02\xc3\xa9"),
    (LongString(b"\xff"), b"S\x00\x00\x00\x01\xff"),
    (b"\x00\xff", b"x\x00\x00\x00\x02\x00\xff"),
    (bytearray(b"ab"), b"x\x00\x00\x00\x02ab"),
    ([], b"A\x00\x00\x00\x00"),
    ([1, "a"], b"A\x00\x00\x00\x0bI\x00\x00\x00\x01S\x00\x00\x00\x01a"),
    ((True,), b"A\x00\x00\x00\x02t\x01"),
    (Timestamp(1), b"T\x00\x00\x00\x00\x00\x00\x00\x01"),
    (Timestamp(2**64 - 1), b"T\xff\xff\xff\xff\xff\xff\xff\xff"),
    (datetime(1970, 1, 1, 0, 0, 1, 999999, tzinfo=UTC), b"T\x00\x00\x00\x00\x00\x00\x00\x01"),
    (datetime(1970, 1, 1, 2, 0, 0, tzinfo=timezone(timedelta(hours=2))), b"T" + bytes(8)),
    ({}, b"F\x00\x00\x00\x00"),
    ({"a": True}, b"F\x00\x00\x00\x04\x01at\x01"),
    (None, b"V"),
]


@pytest.mark.parametrize(("value", "expected"), ENCODINGS, ids=lambda v: repr(v)[:30])
def test_each_type_is_encoded_as_the_grammar_says(value, expected: bytes):
    assert encode_value(value) == expected


@pytest.mark.parametrize(("value", "expected"), ENCODINGS, ids=lambda v: repr(v)[:30])
def test_each_type_decodes_to_the_documented_value(value, expected: bytes):
    decoded, end = read_value(expected, 0)
    assert end == len(expected)
    if isinstance(value, datetime):
        assert decoded == Timestamp.from_datetime(value)
        assert type(decoded) is Timestamp
    elif isinstance(value, tuple):
        assert decoded == list(value)
    elif isinstance(value, bytearray):
        assert decoded == bytes(value)
        assert type(decoded) is bytes
    else:
        assert decoded == value
        assert type(decoded) is expected_type(value)


def expected_type(value) -> type:
    """The type a value comes back as: plain ints past 32 bits are longs."""
    if type(value) is int and not -(2**31) <= value < 2**31:
        return Int64
    if type(value) is Int32:
        return int
    return type(value)


def test_a_table_is_its_size_then_its_fields():
    data = encode_table({"a": 1, "bb": "x"})
    fields = b"\x01aI\x00\x00\x00\x01" + b"\x02bbS\x00\x00\x00\x01x"
    assert data == struct.pack("!I", len(fields)) + fields
    assert decode_table(data) == {"a": 1, "bb": "x"}
    assert list(decode_table(data)) == ["a", "bb"]  # order kept


def test_what_stream_and_dead_letter_headers_decode_to():
    # x-stream-offset (l), x-delivery-count (l), x-death: an array of tables.
    death = {
        "count": Int64(2),
        "reason": "rejected",
        "queue": "q",
        "time": Timestamp(1700000000),
        "exchange": "",
        "routing-keys": ["q"],
    }
    data = encode_table({"x-stream-offset": Int64(42), "x-death": [death]})
    headers = decode_table(data)
    assert headers["x-stream-offset"] == 42
    assert isinstance(headers["x-stream-offset"], int)
    assert headers["x-death"][0]["time"].datetime == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert encode_table(headers) == data  # sent back as it came, count still a long


def test_wrapped_values_behave_as_numbers():
    assert Int64(5) + 1 == 6
    assert type(Int64(5) + 1) is int
    assert repr(Int64(5)) == "Int64(5)"
    assert repr(Float32(0.1)) == f"Float32({struct.unpack('!f', struct.pack('!f', 0.1))[0]!r})"
    assert repr(Timestamp(3)) == "Timestamp(3)"
    assert repr(LongString(b"\xff")) == "LongString(b'\\xff')"
    assert Timestamp.from_datetime(Timestamp(90).datetime) == 90


def test_non_finite_floats_from_elsewhere_still_decode():
    # Refused when sending (the broker cannot take them), read when received.
    data = b"\x00\x00\x00\x0b\x01ad\x7f\xf0\x00\x00\x00\x00\x00\x00"
    assert decode_table(data) == {"a": math.inf}


# Round trips ----------------------------------------------------------------------------------

names = st.text(max_size=20).filter(lambda name: len(name.encode()) <= 255)


def ints_of(kind) -> st.SearchStrategy:
    return st.integers(kind.minimum, kind.maximum).map(kind)


decimals = st.builds(
    lambda unscaled, scale: Decimal(unscaled).scaleb(-scale),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(0, 255),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    *(ints_of(kind) for kind in (Int8, UInt8, Int16, UInt16, UInt32, Int64, Timestamp)),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(width=32, allow_nan=False, allow_infinity=False).map(Float32),
    decimals,
    st.text(max_size=30),
    st.binary(max_size=30),
    st.binary(min_size=1, max_size=10).filter(lambda raw: not is_utf8(raw)).map(LongString),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4),
    max_leaves=20,
)
tables = st.dictionaries(names, values, max_size=6)


def is_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def same(decoded, original) -> bool:
    """Equal, and of the type the module says ``original`` comes back as."""
    if isinstance(original, dict):
        return (
            type(decoded) is dict
            and list(decoded) == list(original)
            and all(same(decoded[key], value) for key, value in original.items())
        )
    if isinstance(original, list):
        return (
            type(decoded) is list
            and len(decoded) == len(original)
            and all(same(a, b) for a, b in zip(decoded, original, strict=True))
        )
    return decoded == original and type(decoded) is expected_type(original)


@settings(max_examples=300, deadline=None)
@given(tables)
def test_any_table_comes_back_equal_and_typed(table):
    data = encode_table(table)
    decoded = decode_table(data)
    assert same(decoded, table)
    assert encode_table(decoded) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_to_a_table_or_a_clear_error(data):
    framed = struct.pack("!I", len(data)) + data
    try:
        table = decode_table(framed)
    except FieldTableError:
        return
    # Not always the same bytes (a 't' octet of 7 is true, written back as
    # 1), but what is written back reads back to itself.
    canonical = encode_table(table)
    assert encode_table(decode_table(canonical)) == canonical


@settings(max_examples=100, deadline=None)
@given(tables.filter(bool))
def test_every_truncation_is_an_error(table):
    data = encode_table(table)
    for end in range(len(data)):
        with pytest.raises(FieldTableError):
            decode_table(data[:end])
    with pytest.raises(FieldTableError, match="after the table"):
        decode_table(data + b"\x00")


# Errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "error", "message"),
    [
        ({"a": {1, 2}}, TypeError, "'a': no AMQP field type for set"),
        ({"a": [1, [object()]]}, TypeError, r"'a': \[1\]: \[0\]: no AMQP field type for object"),
        (
            {"x-death": [{"count": 2**63}]},
            ValueError,
            r"'x-death': \[0\]: 'count': an integer field is at most 64",
        ),
        ({"a": -(2**63) - 1}, ValueError, "at most 64 bits"),
        ({"a": datetime(2024, 1, 1)}, ValueError, "naive datetime"),
        ({"a": datetime(1969, 12, 31, tzinfo=UTC)}, ValueError, "Timestamp holds 0"),
        ({"a": Decimal("NaN")}, ValueError, "finite"),
        ({"a": Decimal("Infinity")}, ValueError, "finite"),
        ({"a": Decimal("1E-256")}, ValueError, "scale of 0 to 255"),
        ({"a": Decimal(2**31)}, ValueError, "signed 32-bit"),
        ({"a": "\ud800"}, ValueError, "'a': text that UTF-8 cannot encode"),
        ({"k" * 256: 1}, ValueError, "at most 255 bytes"),
        ({"a": math.inf}, ValueError, "'a': RabbitMQ cannot read a float that is not finite"),
        ({"a": [Float32(-math.inf)]}, ValueError, "not finite, such as -inf"),
        ({"a": math.nan}, ValueError, "not finite, such as nan"),
        ({1: 1}, TypeError, "a field name is a str"),
    ],
)
def test_what_cannot_be_encoded_is_refused_with_its_place(table, error, message):
    with pytest.raises(error, match=message):
        encode_table(table)


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (Int8, 128),
        (Int8, -129),
        (UInt8, -1),
        (UInt8, 256),
        (Int16, 2**15),
        (UInt16, 2**16),
        (Int32, 2**31),
        (UInt32, 2**32),
        (Int64, 2**63),
        (Timestamp, -1),
        (Timestamp, 2**64),
    ],
)
def test_typed_integers_refuse_values_out_of_their_range(kind, value):
    with pytest.raises(ValueError, match=kind.__name__):
        kind(value)


def test_a_float32_out_of_range_is_refused():
    with pytest.raises(ValueError, match="Float32"):
        Float32(1e39)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00\x00\x03\x01aZ", "unknown field type b'Z'"),
        (b"\x00\x00\x00\x02\x05a", "name runs past"),
        (b"\x00\x00\x00\x02\x01a", "has no value"),
        (b"\x00\x00\x00\x04\x01aI\x00", "'I' value runs past"),
        (b"\x00\x00\x00\x07\x01aS\x00\x00\x00\x09", "9 bytes runs past"),
        (b"\x00\x00\x00\x05\x01aF\x00\x00", "size runs past"),
        (b"\x00\x00\x00\x09", "9 bytes runs past"),
        (b"\x00\x00", "size runs past"),
    ],
)
def test_malformed_tables_are_refused_clearly(data: bytes, message: str):
    with pytest.raises(FieldTableError, match=message):
        decode_table(data)


def test_invalid_utf8_is_kept_as_it_came():
    data = b"\x00\x00\x00\x08\x01\xffS\x00\x00\x00\x01\xfe"
    table = decode_table(data)
    assert table == {"\udcff": LongString(b"\xfe")}
    assert encode_table(table) == data
