"""Errors shared across the package."""

from __future__ import annotations

from pathlib import Path


class ConfigError(Exception):
    """A configuration file is missing or wrong; the message names the file and the problem."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem
