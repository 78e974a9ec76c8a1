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
"""

from __future__ import annotations

import functools

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
        words, end = self._words, len(self._words)
        # The pattern positions reached after the key's words read so far
        # (a nondeterministic automaton: '#' both stays and moves on).
        states = self._skip_hashes({0})
        for key_word in split_words(routing_key):
            reached = set()
            for position in states:
                if position == end:
                    continue
                word = words[position]
                if word == "#":
                    reached.add(position)
                elif word == "*" or word == key_word:
                    reached.add(position + 1)
            if not reached:
                return False
            states = self._skip_hashes(reached)
        return end in states

    __call__ = matches

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
