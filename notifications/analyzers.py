"""Analyzer configuration: which group a notification goes to (docs/reference.rst §5).

The files are the older system's, read as they are:
``<directory>/<Service>/<door>.json``, else ``<directory>/<Service>/default.json``,
else built-in defaults. They are all read and checked at start-up, so that a
broken file stops the daemon instead of failing the first request.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import ConfigError

#: Services whose doors have analyzer files.
ANALYZED_SERVICES = ("GitHub", "Jenkins", "Phabricator")

_KNOWN_KEYS = {
    "administrativeGroup",
    "defaultGroup",
    "map",
    "notifyOnlyOnFailure",
    # "ignore" silences events or push refs per door (see the GitHub renderer).
    "ignore",
}
_MAPPING_KEYS = {"group", "items", "words", "wordsAreStrong"}


@lru_cache(maxsize=4096)
def _pattern(item: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in item.split("*")), re.DOTALL)


def item_matches(pattern: str, name: str) -> bool:
    """Whole-name, case-sensitive match where ``*`` stands for any run of characters."""
    return _pattern(pattern).fullmatch(name) is not None


@dataclass(frozen=True)
class GroupMapping:
    """Items (and for Phabricator, words) that send a notification to a group."""

    group: str
    items: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    words_are_strong: bool = False

    def matches_item(self, name: str) -> bool:
        return any(item_matches(item, name) for item in self.items)

    def matches_words(self, text: str) -> bool:
        lowered = text.lower()
        return any(word.lower() in lowered for word in self.words if word)


@dataclass(frozen=True)
class AnalyzerConfig:
    """The analyzer configuration of one door."""

    administrative_group: str = "orgz"
    default_group: str = ""
    mappings: tuple[GroupMapping, ...] = ()
    notify_only_on_failure: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    source: str = "built-in defaults"

    def default_group_for(self, door: str) -> str:
        """``defaultGroup``, or the lowercased door when it is empty."""
        return self.default_group or door.lower()

    def group_for_item(self, name: str, door: str) -> str:
        """Group of a GitHub repository or a Jenkins job."""
        for mapping in self.mappings:
            if mapping.matches_item(name):
                return mapping.group
        return self.default_group_for(door)

    def group_for_story(self, projects: list[str], text: str, door: str) -> str:
        """Group of a Phabricator story: strong words, then projects, then words."""
        for mapping in self.mappings:
            if mapping.words_are_strong and mapping.matches_words(text):
                return mapping.group
        for mapping in self.mappings:
            if any(mapping.matches_item(project) for project in projects):
                return mapping.group
        for mapping in self.mappings:
            if mapping.matches_words(text):
                return mapping.group
        return self.default_group_for(door)


def _strings(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{what} must be a list of strings")
    return tuple(value)


def parse_analyzer(data: object, source: str = "built-in defaults") -> AnalyzerConfig:
    """Check and turn the JSON of an analyzer file into an :class:`AnalyzerConfig`.

    Raises :class:`ValueError` with what is wrong.
    """
    if not isinstance(data, dict):
        raise ValueError("an analyzer configuration must be a JSON object")
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}")
    for key in ("administrativeGroup", "defaultGroup"):
        if not isinstance(data.get(key, ""), str):
            raise ValueError(f"{key} must be a string")
    raw_map = data.get("map", [])
    if not isinstance(raw_map, list):
        raise ValueError("map must be a list")
    mappings = []
    for index, entry in enumerate(raw_map):
        where = f"map[{index}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be an object")
        unknown = sorted(set(entry) - _MAPPING_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r}")
        if not isinstance(entry.get("group"), str) or not entry["group"]:
            raise ValueError(f"{where}: group must be a non-empty string")
        if not isinstance(entry.get("wordsAreStrong", False), bool):
            raise ValueError(f"{where}: wordsAreStrong must be true or false")
        mappings.append(
            GroupMapping(
                group=entry["group"],
                items=_strings(entry.get("items", []), f"{where}.items"),
                words=_strings(entry.get("words", []), f"{where}.words"),
                words_are_strong=entry.get("wordsAreStrong", False),
            )
        )
    return AnalyzerConfig(
        administrative_group=data.get("administrativeGroup") or "orgz",
        default_group=data.get("defaultGroup", ""),
        mappings=tuple(mappings),
        notify_only_on_failure=_strings(data.get("notifyOnlyOnFailure", []), "notifyOnlyOnFailure"),
        ignore=_strings(data.get("ignore", []), "ignore"),
        source=source,
    )


def read_json(path: Path) -> object:
    """Read a JSON file; raise :class:`ConfigError` naming the file on any problem."""
    try:
        with path.open("rb") as handle:
            return json.load(handle)
    except OSError as error:
        raise ConfigError(path, error.strerror or str(error)) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(path, f"invalid JSON: {error}") from None


class Analyzers:
    """Every analyzer file of a directory, read once."""

    def __init__(self, directory: Path | None):
        self.directory = directory
        self._configs: dict[tuple[str, str], AnalyzerConfig] = {}
        self._defaults: dict[str, AnalyzerConfig] = {}
        if directory is None:
            return
        if not directory.is_dir():
            raise ConfigError(directory, "analyzers directory not found")
        for service in ANALYZED_SERVICES:
            for path in sorted((directory / service).glob("*.json")):
                try:
                    config = parse_analyzer(read_json(path), source=str(path))
                except ValueError as error:
                    raise ConfigError(path, str(error)) from None
                if path.stem == "default":
                    self._defaults[service] = config
                else:
                    self._configs[(service, path.stem)] = config

    def __eq__(self, other: object) -> bool:
        # Two readings are equal when they read the same files the same way
        # (a reload says what it changed).
        if not isinstance(other, Analyzers):
            return NotImplemented
        return (self.directory, self._configs, self._defaults) == (
            other.directory,
            other._configs,
            other._defaults,
        )

    def files(self) -> list[Path]:
        """The analyzer files that were read."""
        return [Path(c.source) for c in (*self._configs.values(), *self._defaults.values())]

    def for_door(self, service: str, door: str) -> AnalyzerConfig:
        """The door's own file, else the service's default.json, else built-in defaults."""
        config = self._configs.get((service, door))
        if config is not None:
            return config
        return self._defaults.get(service) or _BUILTIN


_BUILTIN = AnalyzerConfig()
