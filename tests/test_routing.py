"""Topic patterns (notifications.routing): a table of cases, then the broker as the judge.

The broker comparison binds one queue per pattern to a topic exchange of its
own, publishes every routing key once, then sends each queue an end message
through the default exchange (on the same channel, so it arrives after every
key routed to that queue) and reads each queue up to it: what each queue got
is what RabbitMQ's topic matching selected, to be compared with ours.
"""

from __future__ import annotations

import itertools
import uuid

import pytest
import pytest_twisted
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from txamqp.content import Content

from notifications.amqp.connection import connect
from notifications.routing import (
    TopicPattern,
    compile_pattern,
    covers,
    matches,
    pattern_error,
    split_words,
    valid_pattern,
)
from tests.conftest import test_broker
from tests.helpers import generated

# (pattern, routing key, whether it matches)
CASES = [
    ("#", "", True),
    ("#", "a", True),
    ("#", "a.b.c", True),
    ("#", ".", True),
    ("*", "", False),
    ("*", "a", True),
    ("*", "a.b", False),
    ("*", ".", False),
    ("", "", True),
    ("", "a", False),
    ("a", "a", True),
    ("a", "A", False),
    ("a", "a.b", False),
    ("a", "ab", False),
    ("a.b", "a.b", True),
    ("a.*", "a.b", True),
    ("a.*", "a", False),
    ("a.*", "a.", True),  # '*' matches the empty word
    ("a.*", "a.b.c", False),
    ("a.#", "a", True),
    ("a.#", "a.b.c", True),
    ("a.#", "ab", False),
    ("#.a", "a", True),
    ("#.a", "b.a", True),
    ("#.a", "b.a.c", False),
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.#.b", "a.x.y", False),
    ("#.#", "", True),
    ("#.#", "a.b", True),
    ("*.#", "", False),
    ("*.#", "a", True),
    ("*.#", "a.b.c", True),
    ("#.*", "", False),
    ("#.*", "a.b", True),
    ("*.*", "a", False),
    ("*.*", "a.b", True),
    ("*.*", ".", True),
    ("a..b", "a..b", True),
    ("a.*.b", "a..b", True),
    ("a.#.b", "a..b", True),
    ("a.", "a.", True),
    ("a.", "a", False),
    (".a", ".a", True),
    (".", ".", True),
    (".", "", False),
    ("a*", "a*", True),  # not a wildcard: a literal word
    ("a*", "ab", False),
    ("#a", "a", False),
    ("acme.#", "acme.ops.github.push", True),
    ("*.*.jenkins.completed.failure", "acme.ci.jenkins.completed.failure", True),
    ("*.*.jenkins.completed.failure", "acme.ci.jenkins.completed.success", False),
    ("acme.*.github.#", "acme.ops.github.pull_request.merged", True),
    ("acme.*.github.#", "acme.github.push", False),
    ("é.*", "é.ü", True),
]


@pytest.mark.parametrize(("pattern", "key", "expected"), CASES)
def test_the_topic_rules(pattern: str, key: str, expected: bool):
    assert matches(pattern, key) is expected
    assert compile_pattern(pattern)(key) is expected


def test_words_are_split_as_the_broker_splits_them():
    assert split_words("") == ()
    assert split_words("a") == ("a",)
    assert split_words(".") == ("", "")
    assert split_words("a..b.") == ("a", "", "b", "")


def test_compiled_patterns_are_cached_and_named():
    assert compile_pattern("acme.#") is compile_pattern("acme.#")
    assert repr(compile_pattern("a.*")) == "TopicPattern('a.*')"


def test_many_hashes_match_as_one():
    pattern = TopicPattern(".".join(["#"] * 200) + ".z")
    assert pattern.matches("a." * 300 + "z")
    assert not pattern.matches("a." * 300 + "y")


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("a*", "mixes"),
        ("acme.#ops", "mixes"),
        ("**", "mixes"),
        ("x" * 256, "at most 255 bytes"),
        ("é" * 128, "at most 255 bytes"),
        ("a.\ud800", "lone surrogate"),
        (b"acme.#", "text"),
    ],
)
def test_patterns_refused(pattern, problem: str):
    assert problem in pattern_error(pattern)
    assert not valid_pattern(pattern)


@pytest.mark.parametrize("pattern", ["", "#", "*", "acme.#", "a..b", "x" * 255, "é" * 127, "*.#.a"])
def test_patterns_accepted(pattern: str):
    assert pattern_error(pattern) is None
    assert valid_pattern(pattern)


# Against RabbitMQ -----------------------------------------------------------------------------

PATTERN_WORDS = ["a", "b", "", "*", "#"]
KEY_WORDS = ["a", "b", "c", ""]


def texts(words: list[str], most: int) -> list[str]:
    """Every dotted text of up to ``most`` words from ``words`` (and the empty one)."""
    found = {""}
    for count in range(1, most + 1):
        found.update(".".join(parts) for parts in itertools.product(words, repeat=count))
    return sorted(found)


def dotted(words: list[str], most: int):
    return st.lists(st.sampled_from(words), min_size=1, max_size=most).map(".".join)


async def broker_routing(patterns: list[str], keys: list[str]) -> dict[str, set[str]]:
    """``{pattern: the keys RabbitMQ routed to a queue bound with it}``."""
    broker = test_broker()
    client, channel = await connect(reactor, broker)
    try:
        queues = {}
        for pattern in patterns:
            declared = await channel.queue_declare(exclusive=True, auto_delete=True)
            await channel.queue_bind(
                queue=declared.queue, exchange=broker.exchange, routing_key=pattern
            )
            queues[pattern] = declared.queue
        for key in keys:
            channel.basic_publish(
                exchange=broker.exchange, routing_key=key, content=Content(b"key:" + key.encode())
            )
        end = uuid.uuid4().hex.encode()
        for queue in queues.values():
            channel.basic_publish(exchange="", routing_key=queue, content=Content(end))
        routed: dict[str, set[str]] = {}
        for pattern, queue in queues.items():
            reply = await channel.basic_consume(queue=queue, no_ack=True)
            deliveries = await client.queue(reply.consumer_tag)
            got: list[str] = []
            while True:
                message = await deliveries.get(timeout=10)
                if message.content.body == end:
                    break
                got.append(message.content.body.decode().removeprefix("key:"))
            assert len(got) == len(set(got)), f"{pattern!r} got a key twice: {got}"
            routed[pattern] = set(got)
        return routed
    finally:
        await channel.exchange_delete(exchange=broker.exchange)
        await client.close(within=2)


@pytest_twisted.ensureDeferred
async def test_the_matcher_agrees_with_rabbitmq():
    # Every pattern of up to two words and every key of up to three, then
    # longer ones drawn by hypothesis (deduplicated: a queue per pattern).
    patterns = set(texts(PATTERN_WORDS, 2)) | {"a*", "#a", "**", "a.#.#.b", "#.*.#"}
    patterns.update(generated(dotted(PATTERN_WORDS, 6), 60))
    keys = set(texts(KEY_WORDS, 3)) | {"a*", "#a", "A", "a.b.c.d.e.f"}
    keys.update(generated(dotted(KEY_WORDS, 6), 80))
    patterns_list, keys_list = sorted(patterns), sorted(keys)
    routed = await broker_routing(patterns_list, keys_list)
    disagreements = [
        (pattern, key, key in routed[pattern])
        for pattern in patterns_list
        for key in keys_list
        if matches(pattern, key) != (key in routed[pattern])
    ]
    assert disagreements == [], "(pattern, key, what RabbitMQ did)"
    # The comparison is not vacuous: the broker routed plenty, and not everything.
    pairs = sum(len(got) for got in routed.values())
    assert 0 < pairs < len(patterns_list) * len(keys_list)


# covers: a pattern asked for within the patterns granted ---------------------------------

#: (granted, asked for, whether every key asked for is granted)
COVERS = [
    (["acme.#"], "acme.#", True),
    (["acme.#"], "acme.*.github.#", True),
    (["acme.#"], "acme", True),  # acme.# matches "acme" itself
    (["acme.#"], "#", False),
    (["acme.#"], "acme*", False),  # a literal word, another project
    (["acme.*"], "acme.#", False),  # acme and acme.a.b are not granted
    (["a.b", "a.c"], "a.*", False),  # a.d
    (["a.*", "a.#.b"], "a.*.b", True),
    (["*.ops.#", "acme.#"], "acme.ops.#", True),
    (["*.*.#"], "#.x.y", True),
    (["#"], "", True),
    (["*"], "", False),
    (["a.#.b", "a.#.c"], "a.#.b", True),
    (["a.#.b", "a.#.c"], "a.#", False),
    (["#.b", "a.#"], "a.*.b", True),
    (["a..b"], "a.*.b", False),  # only the empty middle word is granted
    (["a.*.b"], "a..b", True),
    ([], "acme.#", False),  # nothing granted
]


@pytest.mark.parametrize(("granted", "asked", "expected"), COVERS)
def test_covers(granted: list[str], asked: str, expected: bool):
    assert covers(granted, asked) is expected


WORDS = ["a", "b", "*", "#"]


def keys_up_to(length: int, alphabet: list[str]) -> list[str]:
    found = []
    for size in range(length + 1):
        found += [".".join(words) for words in itertools.product(alphabet, repeat=size)]
    return found


#: Every key of up to 5 words over a, b and a word no pattern names (z), "" included.
KEYS = keys_up_to(5, ["a", "b", "z"])


@settings(max_examples=300, deadline=None, phases=[Phase.generate])
@given(
    granted=st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3), max_size=2),
    asked=st.lists(st.sampled_from(WORDS), min_size=1, max_size=3),
)
def test_covers_agrees_with_every_key_tried(granted: list[list[str]], asked: list[str]):
    """Against brute force: no key of up to 5 words is asked for and not granted when
    covers says yes; some is when it says no (patterns of 3 words or fewer have their
    smallest counterexample within 5 words)."""
    granted_patterns = [".".join(words) for words in granted]
    asked_pattern = ".".join(asked)
    outside = [
        key
        for key in KEYS
        if matches(asked_pattern, key) and not any(matches(g, key) for g in granted_patterns)
    ]
    assert covers(granted_patterns, asked_pattern) is (not outside), outside[:3]


def test_covers_gives_up_on_a_walk_too_long():
    asked = "a.b.c.d.e.f.g"
    assert covers(["a.#"], asked) is True
    assert covers(["a.#"], asked, limit=3) is False  # past the limit: no
