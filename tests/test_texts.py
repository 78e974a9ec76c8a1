"""The text helpers every renderer shares (docs/reference.rst §4)."""

from __future__ import annotations

import pytest

from notifications.texts import SEPARATOR, commit_title, cut


def test_separator_is_space_em_dash_space():
    assert SEPARATOR == " \u2014 "


@pytest.mark.parametrize(
    ("text", "length", "expected"),
    [
        pytest.param("a" * 114, 114, "a" * 114, id="exactly-default-length-kept"),
        pytest.param("a" * 115, 114, "a" * 113 + "…", id="one-over-default-cut"),
        pytest.param("abcde", 5, "abcde", id="exactly-n-kept"),
        pytest.param("abcdef", 5, "abcd…", id="n-plus-one-cut-to-n-minus-one"),
        pytest.param("abc", 5, "abc", id="shorter-kept"),
        pytest.param("", 5, "", id="empty-kept"),
        pytest.param("abc", 1, "…", id="n-is-one"),
        pytest.param("a", 1, "a", id="one-char-fits-one"),
        pytest.param("abc", 0, "…", id="n-zero"),
        pytest.param("", 0, "…", id="n-zero-even-when-empty"),
        pytest.param("abc", -3, "…", id="n-negative"),
        pytest.param("é" * 6, 5, "éééé…", id="counts-characters-not-bytes"),
    ],
)
def test_cut(text, length, expected):
    assert cut(text, length) == expected
    assert len(cut(text, length)) <= max(length, 1)


def test_cut_defaults_to_114():
    assert cut("x" * 200) == "x" * 113 + "…"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param("Add the widget factory", "Add the widget factory", id="one-line"),
        pytest.param(
            "Add the widget factory\n\nSummary: it builds widgets.\n",
            "Add the widget factory",
            id="multi-line",
        ),
        pytest.param("Fix the spin\r\n\r\nDetails.", "Fix the spin", id="crlf"),
        pytest.param("x" * 72 + "\nmore", "x" * 72, id="72-kept"),
        pytest.param("x" * 73, "x" * 71 + "…", id="73-cut"),
        pytest.param("", "", id="empty"),
    ],
)
def test_commit_title(message, expected):
    assert commit_title(message) == expected
