"""The gates' JSON through orjson: the standard library's answers, faster.

``parse_json_object`` reads bodies with orjson and hands the standard library
whatever orjson refuses or may read differently; ``Notification.to_json``
encodes with orjson and falls back to the standard library. The oracles are
copies of both as they were before orjson (``stdlib_parse_json_object``,
``stdlib_to_json``): whatever the body, the new code must accept and refuse
the same bodies, with the same values (an int stays an int) and the same
400 reasons, and write notifications that read back to the same values.
"""

from __future__ import annotations

import json
import math
import tracemalloc
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from notifications import jsonutil
from notifications.gates import base
from notifications.gates.base import MAX_JSON_DEPTH, GateError, parse_json_object
from notifications.jsonutil import NonFiniteFloat, dumps
from notifications.notification import Notification
from tests.payloads import github_push

PROPERTIES = settings(max_examples=400, deadline=None)


# The oracles: the code as it was before orjson ---------------------------------


def _stdlib_bad_request(reason: str) -> GateError:
    return GateError(400, "Bad request.", reason)


def _stdlib_depth_checked(value: Any) -> Any:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > 64:
            raise _stdlib_bad_request("JSON nested deeper than 64 levels")
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return value


def stdlib_parse_json_object(raw: bytes | str) -> dict[str, Any]:
    """parse_json_object before orjson, word for word: the reference reading."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        value = json.loads(text)
    except UnicodeDecodeError:
        raise _stdlib_bad_request("body is not valid UTF-8") from None
    except RecursionError:
        raise _stdlib_bad_request("JSON nested deeper than 64 levels") from None
    except ValueError as error:
        raise _stdlib_bad_request(
            f"body is not valid JSON ({error.args[0].split(':')[0]})"
        ) from None
    if not isinstance(value, dict):
        raise _stdlib_bad_request("body is not a JSON object")
    if "\\ud" in text or "\\uD" in text:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise _stdlib_bad_request("body has an unpaired surrogate escape") from None
    return _stdlib_depth_checked(value)


def stdlib_to_json(notification: Notification) -> bytes:
    """Notification.to_json before orjson: the reference encoding."""
    return json.dumps(notification.as_dict(), ensure_ascii=False, separators=(",", ":")).encode()


# Comparing readings ------------------------------------------------------------


def reading(parse, raw: bytes | str) -> tuple:
    """("accepted", value) or ("refused", status, message, reason)."""
    try:
        return ("accepted", parse(raw))
    except GateError as error:
        return ("refused", error.status, error.message, error.reason)


def assert_same_value(got: Any, expected: Any, *, marked: bool, path: str = "$") -> None:
    """Equal and of the same types all the way down, keys in the same order.

    Floats compare by ``repr`` (so -0.0 is not 0.0 and NaN is NaN). With
    ``marked``, a NaN or infinity of ``expected`` must be a
    :class:`NonFiniteFloat` in ``got``: the mark the encoder needs.
    """
    if marked and type(expected) is float and not math.isfinite(expected):
        assert type(got) is NonFiniteFloat, (path, got)
        assert repr(got) == repr(expected), path
        return
    assert type(got) is type(expected), (path, got, expected)
    if type(expected) is dict:
        assert list(got) == list(expected), path
        for key, value in expected.items():
            assert_same_value(got[key], value, marked=marked, path=f"{path}.{key!r}")
    elif type(expected) is list:
        assert len(got) == len(expected), path
        for index, (item, value) in enumerate(zip(got, expected, strict=True)):
            assert_same_value(item, value, marked=marked, path=f"{path}[{index}]")
    elif type(expected) is float:
        assert repr(got) == repr(expected), (path, got, expected)
    else:
        assert got == expected, (path, got, expected)


def assert_read_as_before(raw: bytes | str) -> tuple:
    expected = reading(stdlib_parse_json_object, raw)
    got = reading(parse_json_object, raw)
    assert got[0] == expected[0], (raw[:200], got, expected)
    if expected[0] == "refused":
        assert got == expected, raw[:200]
    else:
        assert_same_value(got[1], expected[1], marked=True)
    return got


def has_float(value: Any) -> bool:
    if isinstance(value, dict):
        return any(map(has_float, value.values()))
    if isinstance(value, list):
        return any(map(has_float, value))
    return isinstance(value, float)


# Strategies --------------------------------------------------------------------

# What JSON escapes, what UTF-8 cannot carry (lone surrogates, which
# json.dumps writes as \udXXX escapes), pairs, non-ASCII, a BOM.
characters = st.characters(exclude_categories=()) | st.sampled_from(
    list('\x00\x1f\x7f"\\/\u2028\ufeffé€\U0001f600\ud800\udbff\udc00\udfff')
)
texts = st.text(characters, max_size=12)
integers = (
    st.integers()
    | st.integers(min_value=-(2**64) - 4, max_value=2**64 + 4)
    | st.sampled_from(
        [-(2**63) - 1, -(2**63), 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30, -(10**30), 10**308]
    )
)
scalars = st.none() | st.booleans() | integers | st.floats() | texts
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(texts, children, max_size=5),
    max_leaves=30,
)
objects = st.dictionaries(texts, json_values, max_size=6)


@st.composite
def documents(draw, values=objects | json_values) -> bytes | str:
    """A JSON text as json.dumps writes it (NaN, Infinity and lone surrogates
    included), as bytes (lone surrogates then being invalid UTF-8) or as the
    str that a form's payload field gives."""
    value = draw(values)
    text = json.dumps(
        value,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from([None, 0, 2, "\t"])),
    )
    if draw(st.booleans()):
        return text
    return text.encode("utf-8", "surrogatepass")


# JSON numbers, and texts that nearly are; mantissas long enough to round.
number_texts = st.from_regex(
    r"\A-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,40})?([eE][+-]?[0-9]{1,3})?\Z"
) | st.from_regex(r"\A[-+]?[0-9.eE+-]{1,12}\Z")
json_ish = st.text(st.sampled_from(list('{}[]":,\\ \t\n\r\x0c0123456789.eE+-truefalsnNIiyuTé\x00')))


# Parsing -----------------------------------------------------------------------


@PROPERTIES
@given(documents())
@example(b'{"a": 18446744073709551616, "b": -9223372036854775809, "c": 18446744073709551615}')
@example(b'{"a": NaN, "b": -Infinity, "c": 1e400, "d": -1e400}')
@example(b'{"a": "\\ud800"}')
@example(b'{"a": "\\ud83d\\ude00", "\\udc00": 1}')
@example(b'{"a": "\xed\xa0\x80"}')
@example(b"\xef\xbb\xbf{}")
@example('{"a": "\ud800"}')
@example(b'{"b": 1, "a": 2, "b": 3}')
def test_documents_are_read_as_by_the_standard_library(raw):
    assert_read_as_before(raw)


@PROPERTIES
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "é", "\\u0061"]), json_values),
        max_size=6,
    )
)
def test_repeated_keys_keep_the_first_place_and_the_last_value(pairs):
    raw = "{" + ",".join(f'"{key}":{json.dumps(value)}' for key, value in pairs) + "}"
    assert_read_as_before(raw.encode("utf-8", "surrogatepass"))


@PROPERTIES
@given(number_texts)
@example("9007199254740993.0")
@example("2.2250738585072011e-308")
@example("4.9406564584124654e-324")
@example("2.4703282292062327e-324")
@example("1.7976931348623157e308")
@example("1.7976931348623158e308")
@example("1.7976931348623159e308")
@example("9223372036854775807")
@example("9223372036854775808")
@example("-9223372036854775808")
@example("-9223372036854775809")
@example("1" + "0" * 400)
@example("1" + "0" * 5000)
@example("-0")
@example("-0.0")
def test_numbers_are_read_as_by_the_standard_library(number):
    assert_read_as_before(f'{{"n": {number}}}'.encode())
    assert_read_as_before(f'{{"n": [{number}, {{"m": {number}}}]}}'.encode())


@PROPERTIES
@given(st.binary(max_size=300))
def test_any_bytes_are_read_as_by_the_standard_library(raw):
    assert_read_as_before(raw)


@PROPERTIES
@given(json_ish | st.text(characters, max_size=40))
def test_any_text_is_read_as_by_the_standard_library(text):
    assert_read_as_before(text)
    assert_read_as_before(text.encode("utf-8", "surrogatepass"))


@PROPERTIES
@given(
    raw=documents(objects),
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(0, 3), json_ish), min_size=1, max_size=4
    ),
)
def test_damaged_documents_are_read_as_by_the_standard_library(raw, edits):
    raw = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    for position, cut, inserted in edits:
        position %= len(raw) + 1
        raw = raw[:position] + inserted.encode() + raw[position + cut :]
    assert_read_as_before(raw)


def nested(kinds: list[str], inner: str = "1") -> str:
    """Containers opened one in the other (``{`` with a key), ``inner`` at the bottom."""
    opening = "".join('{"k":' if kind == "{" else "[" for kind in kinds)
    closing = "".join("}" if kind == "{" else "]" for kind in reversed(kinds))
    return opening + inner + closing


@PROPERTIES
@given(
    kinds=st.lists(st.sampled_from("{["), max_size=140),
    inner=st.sampled_from(
        ["1", "[]", "{}", "18446744073709551616", "NaN", '"\\ud800"', "1.5", "x"]
    ),
)
def test_nesting_is_read_as_by_the_standard_library(kinds, inner):
    assert_read_as_before(nested(["{", *kinds], inner))
    assert_read_as_before(nested(kinds, inner))


DEEPER = ("refused", 400, "Bad request.", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


@pytest.mark.parametrize("kind", ["{", "["])
@pytest.mark.parametrize("inner", ["1", "18446744073709551616", "1.5e300"])
def test_nesting_up_to_64_levels_is_accepted_and_65_refused(kind, inner):
    assert MAX_JSON_DEPTH == 64
    accepted = assert_read_as_before(nested(["{", *[kind] * 63], inner).encode())
    assert accepted[0] == "accepted"
    assert assert_read_as_before(nested(["{", *[kind] * 64], inner).encode()) == DEEPER
    assert assert_read_as_before(nested(["{", *[kind] * 64], "[]").encode()) == DEEPER


@pytest.mark.parametrize("depth", [200, 1023, 1024, 1025, 3000, 100_000])
@pytest.mark.parametrize("kind", ["{", "["])
def test_deep_nesting_is_refused_as_before(depth, kind):
    # In an object: too deep, whether orjson (up to 1024 levels) or the
    # standard library (up to its recursion limit) reads it.
    assert assert_read_as_before(nested(["{", *[kind] * (depth - 1)]).encode()) == DEEPER
    # Arrays alone: not an object, or (past the recursion limit) too deep.
    assert_read_as_before(nested([kind] * depth))


def test_integers_past_64_bits_stay_exact_ints():
    value = parse_json_object(b'{"big": 18446744073709551616, "small": [-9223372036854775809]}')
    assert type(value["big"]) is int and value["big"] == 2**64
    assert type(value["small"][0]) is int and value["small"][0] == -(2**63) - 1


def test_a_push_is_read_by_orjson_alone(monkeypatch):
    body = json.dumps(github_push(commits=12)).encode()

    def stdlib(raw):
        raise AssertionError("the push went to the standard library")

    monkeypatch.setattr(base, "_parse_with_stdlib", stdlib)
    assert parse_json_object(body) == json.loads(body)


def test_integers_past_64_bits_and_nan_go_to_the_standard_library(monkeypatch):
    readings = []
    stdlib = base._parse_with_stdlib

    def spy(raw):
        readings.append(raw)
        return stdlib(raw)

    monkeypatch.setattr(base, "_parse_with_stdlib", spy)
    for raw in (b'{"a": [1e19]}', b'{"a": 18446744073709551616}', b'{"a": NaN}'):
        parse_json_object(raw)
    parse_json_object(b'{"a": [18446744073709551615, -9223372036854775808, 1.5e18]}')
    assert readings == [b'{"a": [1e19]}', b'{"a": 18446744073709551616}', b'{"a": NaN}']


# Encoding ----------------------------------------------------------------------


def notification(raw_content: Any) -> Notification:
    return Notification(
        service="GitHub",
        project="Acme",
        group="widgets",
        rawContent=raw_content,
        type="push",
        text="alice pushed «Add the widget factory» — 1 commit",
        link="https://github.com/Acme/widgets/compare/0a1b2c3d4e5f...5f3c2a7e9d1b",
    )


def assert_encoded_as_before(raw_content: Any) -> bytes | None:
    try:
        expected = stdlib_to_json(notification(raw_content))
    except UnicodeEncodeError:
        # A lone surrogate, which a str body (not bytes) can bring in.
        with pytest.raises(UnicodeEncodeError):
            notification(raw_content).to_json()
        return None
    got = notification(raw_content).to_json()
    assert_same_value(json.loads(got), json.loads(expected), marked=False)
    if not has_float(raw_content):
        assert got == expected
    return got


@PROPERTIES
@given(documents(objects))
def test_parsed_bodies_are_encoded_as_before(raw):
    accepted = reading(parse_json_object, raw)
    if accepted[0] == "accepted":
        assert_encoded_as_before(accepted[1])


@PROPERTIES
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | integers
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(st.characters(exclude_categories=["Cs"]), max_size=12),
        lambda children: (
            st.lists(children, max_size=5)
            | st.dictionaries(st.text(max_size=8), children, max_size=5)
        ),
        max_leaves=30,
    )
)
def test_any_raw_content_is_encoded_as_before(raw_content):
    assert_encoded_as_before(raw_content)


def test_the_seven_keys_come_in_spec_order_and_the_payload_keys_as_received():
    payload = {"zeta": 1, "alpha": {"b": 2, "a": 1}, "é": "ü"}
    encoded = assert_encoded_as_before(payload)
    assert encoded.startswith(b'{"service":"GitHub","project":"Acme","group":"widgets",')
    assert b'"rawContent":{"zeta":1,"alpha":{"b":2,"a":1},"\xc3\xa9":"\xc3\xbc"},"type":' in encoded


def test_nan_and_infinities_read_from_a_body_are_written_as_before():
    value = parse_json_object(b'{"a": NaN, "b": [Infinity, -Infinity, 1e400], "c": 1.5}')
    encoded = assert_encoded_as_before(value)
    assert b'"rawContent":{"a":NaN,"b":[Infinity,-Infinity,Infinity],"c":1.5}' in encoded


def test_integers_past_64_bits_are_written_exactly():
    value = parse_json_object(b'{"a": 18446744073709551616, "b": [-99999999999999999999999]}')
    encoded = assert_encoded_as_before(value)
    assert b'"rawContent":{"a":18446744073709551616,"b":[-99999999999999999999999]}' in encoded


def test_float_spellings_may_differ_but_not_values():
    value = {"tiny": 1e-05, "huge": 1e16, "third": 1 / 3, "negative zero": -0.0}
    encoded = assert_encoded_as_before(value)
    assert json.loads(encoded)["rawContent"]["tiny"] == 1e-05


def test_a_push_is_encoded_by_orjson_alone(monkeypatch):
    push = parse_json_object(json.dumps(github_push(commits=12)).encode())
    expected = stdlib_to_json(notification(push))

    def stdlib(*args, **kwargs):
        raise AssertionError("the push went to the standard library")

    monkeypatch.setattr(jsonutil.json, "dumps", stdlib)
    assert notification(push).to_json() == expected


def test_what_no_utf8_can_carry_still_fails_to_encode():
    with pytest.raises(UnicodeEncodeError):
        stdlib_to_json(notification({"a": "\ud800"}))
    with pytest.raises(UnicodeEncodeError):
        notification({"a": "\ud800"}).to_json()


def test_encoded_notifications_hold_no_more_memory_than_their_size():
    # Notification bodies stay in memory while they wait for the broker:
    # orjson's own result keeps its working buffer (about 16 KB for a
    # 6.8 KB push), so dumps gives a copy of the exact size.
    payload = github_push(12)
    tracemalloc.start()
    try:
        kept = [dumps(payload) for _ in range(50)]
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = len(kept[0])
    assert size > 6000
    assert held / len(kept) < size + 512, (held / len(kept), size)
