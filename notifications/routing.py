"""Topic patterns matched against routing keys as RabbitMQ's topic exchange does.

The daemon filters notifications it reads back (the status page, ``tail``,
``history``, the event stream) with the same patterns a queue is bound
with, so a pattern must select here exactly what it would select on the
broker. RabbitMQ's rules (checked against the broker by
``tests/test_routing.py``):

- A routing key and a pattern are split into words on every ``.``. Empty
  words count: ``a..b`` is three words, the middle one empty; ``a.`` is
  ``a`` and an empty word. The empty key ``""`` has no word at all (not one
  empty word).
- In a pattern, a word that is exactly ``*`` matches exactly one word (an
  empty one too), a word that is exactly ``#`` matches zero or more words,
  and any other word matches only the same word, byte for byte (case
  matters). So ``#`` matches every key, the empty one included; ``*`` does
  not match ``""``; ``a.#`` matches ``a``; ``#.#`` is ``#``; ``*.#`` is "one
  word or more".
- ``*`` and ``#`` are special only as whole words: the broker takes ``a*``,
  ``#b`` or ``**`` as ordinary words, matched literally.

:func:`valid_pattern` says what a caller may give as a pattern: the
broker's limits (a short string: at most 255 bytes in UTF-8), and no word
that mixes ``*`` or ``#`` with other characters. The broker would accept
such a word, but as a literal that no notification key can contain (the
daemon turns ``*`` and ``#`` in keys into ``_``), so it is a mistake to
report rather than a filter that silently matches nothing.

:func:`covers` says whether a pattern asks for nothing beyond what other
patterns grant: every routing key it matches is matched by one of them (the
rights of a consumer of ``GET /events``, reference §10.2).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

#: A routing key and a binding pattern are AMQP short strings.
MAX_PATTERN_BYTES = 255


def split_words(text: str) -> tuple[str, ...]:
    """The words of a routing key or a pattern, as the broker splits them."""
    return tuple(text.split(".")) if text else ()


class TopicPattern:
    """A compiled topic pattern; call it (or :meth:`matches`) with a routing key."""

    __slots__ = ("_words", "pattern")

    def __init__(self, pattern: str):
        self.pattern = pattern
        words: list[str] = []
        for word in split_words(pattern):
            # Consecutive '#' words match what one does: keeping one bounds
            # the states below by the number of words.
            if not (word == "#" and words and words[-1] == "#"):
                words.append(word)
        self._words = tuple(words)

    def __repr__(self) -> str:
        return f"TopicPattern({self.pattern!r})"

    def matches(self, routing_key: str) -> bool:
        """Whether the broker would route a message with ``routing_key`` to this binding."""
        # The pattern positions reached after the key's words read so far
        # (a nondeterministic automaton: '#' both stays and moves on).
        states = self._skip_hashes({0})
        for key_word in split_words(routing_key):
            states = self._step(states, key_word)
            if not states:
                return False
        return len(self._words) in states

    __call__ = matches

    def _step(self, states: Iterable[int], key_word) -> set[int]:
        """The positions reached from ``states`` after one more key word."""
        words, end = self._words, len(self._words)
        reached = set()
        for position in states:
            if position == end:
                continue
            word = words[position]
            if word == "#":
                reached.add(position)
            elif word == "*" or word == key_word:
                reached.add(position + 1)
        return self._skip_hashes(reached)

    def _skip_hashes(self, states: set[int]) -> set[int]:
        """Add the positions just after every '#' reached: it may match no word."""
        words = self._words
        for position in list(states):
            while position < len(words) and words[position] == "#":
                position += 1
                states.add(position)
        return states


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> TopicPattern:
    """The matcher of ``pattern`` (cached): ``compile_pattern("acme.#")("acme.ops.x")``."""
    return TopicPattern(pattern)


def matches(pattern: str, routing_key: str) -> bool:
    """Whether RabbitMQ's topic exchange would route ``routing_key`` to a binding ``pattern``."""
    return compile_pattern(pattern).matches(routing_key)


def pattern_error(pattern: str) -> str | None:
    """Why ``pattern`` cannot be used as a topic pattern, or ``None`` when it can."""
    if not isinstance(pattern, str):
        return f"a pattern is text, not {type(pattern).__name__}"
    try:
        size = len(pattern.encode())
    except UnicodeEncodeError:
        return "a pattern must be valid Unicode text (it holds a lone surrogate)"
    if size > MAX_PATTERN_BYTES:
        return f"a pattern is at most {MAX_PATTERN_BYTES} bytes in UTF-8, not {size}"
    for word in split_words(pattern):
        if word not in ("*", "#") and ("*" in word or "#" in word):
            return (
                f"the word {word!r} mixes '*' or '#' with other characters: "
                "they are wildcards only as whole words (write 'a.*', not 'a*')"
            )
    return None


def valid_pattern(pattern: str) -> bool:
    """Whether ``pattern`` may be given as a topic pattern (see :func:`pattern_error`)."""
    return pattern_error(pattern) is None


#: A word that no pattern names: it stands for every such word in :func:`covers`.
_ANY_OTHER_WORD = object()

#: The most states :func:`covers` explores before it gives up (and says no).
COVERS_LIMIT = 10_000


def covers(allowed: Iterable[str], requested: str, limit: int = COVERS_LIMIT) -> bool:
    """Whether every routing key ``requested`` matches is matched by one of ``allowed``.

    ``covers(["acme.#"], "acme.*.github.#")`` is true; ``covers(["acme.#"], "#")``
    is false (``other.x`` is matched by ``#`` only); ``covers(["a.b", "a.c"],
    "a.*")`` is false (``a.d``), and so is any pattern when nothing is allowed.

    The patterns are automata over words; only the words they name matter, plus
    one word none of them names (standing for all the others). The routing keys
    ``requested`` matches are walked, all the patterns in step, looking for one
    that no allowed pattern matches: the states reached are finite, so the walk
    ends. Past ``limit`` states (patterns built to make the walk long) the answer
    is no.
    """
    wanted = compile_pattern(requested)
    granted = [compile_pattern(pattern) for pattern in allowed]
    if not granted:
        return False
    literals = {
        word for pattern in (wanted, *granted) for word in pattern._words if word not in ("*", "#")
    }
    symbols = [*sorted(literals), _ANY_OTHER_WORD]

    def start(pattern: TopicPattern) -> frozenset[int]:
        return frozenset(pattern._skip_hashes({0}))

    first = (start(wanted), tuple(start(pattern) for pattern in granted))
    seen = {first}
    todo = [first]
    while todo:
        states, granted_states = todo.pop()
        if len(wanted._words) in states and not any(
            len(pattern._words) in reached
            for pattern, reached in zip(granted, granted_states, strict=True)
        ):
            return False  # a key requested matches and no allowed pattern does
        for symbol in symbols:
            after = frozenset(wanted._step(states, symbol))
            if not after:
                continue  # no key requested goes on this way
            following = (
                after,
                tuple(
                    frozenset(pattern._step(reached, symbol))
                    for pattern, reached in zip(granted, granted_states, strict=True)
                ),
            )
            if following not in seen:
                if len(seen) >= limit:
                    return False
                seen.add(following)
                todo.append(following)
    return True
