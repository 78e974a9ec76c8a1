"""The project's reference, ``docs/reference.rst``, and what points into it.

The code, the tests and the README cite the reference by section number
(``reference §3.1``): every section so cited must be a numbered heading of
the reference, which must itself be valid reStructuredText. No file may
point to a document the repository does not hold. The modules and folders
the README's "Layout" lists must exist.

The documents are read with docutils, so that a numbered list item or a
code block is never taken for a heading.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from docutils import nodes
from docutils.core import publish_doctree
from docutils.utils import SystemMessage

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference.rst"
README = ROOT / "README.rst"

#: Where citations are looked for (``benchmarks/`` may hold only non-Python files).
CITING = (ROOT / "notifications", ROOT / "tests", ROOT / "benchmarks", ROOT / "docs", README)

#: ``§3``, ``§3.1``; a range ``§3.2–3.4`` cites its last section too.
CITATION = re.compile(r"§\s*(\d+(?:\.\d+)*)(?:\s*[–-]\s*(\d+(?:\.\d+)*))?")

#: The number of a numbered heading: ``3.1 GitHub``, ``1. The notification``.
NUMBERED = re.compile(r"(\d+(?:\.\d+)*)\.?\s")

#: Documents the repository does not hold. Spelt in pieces so that this file,
#: which is in the repository too, does not match itself.
FOREIGN = (
    re.compile(r"\b" + "SP" + r"EC\b"),
    re.compile(r"(?:\.\.|/work)/" + "shared" + r"\b"),
)

#: A path of the package written as a literal: ``notifications/web.py``, ``notifications/gates/``.
PACKAGE_PATH = re.compile(r"notifications/[\w./-]*")


def doctree(path: Path, strict: bool = False) -> nodes.document:
    """The parsed document; with ``strict``, any warning of docutils is an error."""
    settings = {"report_level": 5, "halt_level": 2 if strict else 5, "warning_stream": False}
    return publish_doctree(path.read_text(encoding="utf-8"), settings_overrides=settings)


def section_title(section: nodes.section) -> str:
    return section.next_node(nodes.title).astext()


def numbered_sections(document: nodes.document) -> dict[str, nodes.section]:
    """Number → section of every heading that starts with a number."""
    sections: dict[str, nodes.section] = {}
    for section in document.findall(nodes.section):
        match = NUMBERED.match(section_title(section))
        if match is None:
            continue
        number = match.group(1)
        assert number not in sections, f"section {number} is numbered twice"
        sections[number] = section
    return sections


def text_files(*places: Path) -> list[Path]:
    """The text files at or under ``places`` (byte caches and binary files left out)."""
    files = []
    for place in places:
        for path in [place] if place.is_file() else sorted(place.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and is_text(path):
                files.append(path)
    return files


def is_text(path: Path) -> bool:
    try:
        path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return False
    return True


def citations(paths: list[Path]) -> dict[str, list[str]]:
    """Section number → the files (relative to the repository) that cite it."""
    cited: dict[str, list[str]] = {}
    for path in paths:
        for match in CITATION.finditer(path.read_text(encoding="utf-8")):
            for number in match.groups():
                if number is not None:
                    cited.setdefault(number, []).append(str(path.relative_to(ROOT)))
    return cited


def repository_files() -> list[Path]:
    """Every file of the checkout that git tracks or would track (not the ignored ones)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def layout_paths(document: nodes.document) -> list[str]:
    """The package paths written as literals in the section titled "Layout"."""
    sections = [s for s in document.findall(nodes.section) if section_title(s) == "Layout"]
    assert len(sections) == 1, 'the README must have one section titled "Layout"'
    return [
        literal.astext()
        for literal in sections[0].findall(nodes.literal)
        if PACKAGE_PATH.fullmatch(literal.astext())
    ]


def test_the_reference_is_valid_restructuredtext():
    try:
        doctree(REFERENCE, strict=True)
    except SystemMessage as error:
        pytest.fail(f"docs/reference.rst: {error}")


def test_subsections_are_numbered_under_their_section():
    sections = numbered_sections(doctree(REFERENCE))
    assert {"1", "2", "3", "8"} <= set(sections)
    for number, section in sections.items():
        for child in section.findall(nodes.section, include_self=False):
            match = NUMBERED.match(section_title(child))
            assert match is not None, f"§{number} has an unnumbered subsection"
            assert match.group(1).startswith(number + "."), (number, match.group(1))


def test_every_cited_section_exists():
    sections = numbered_sections(doctree(REFERENCE))
    cited = citations(text_files(*CITING))
    # The package cites many sections; none found means the search is broken.
    assert len(cited) > 10
    missing = {number: files for number, files in cited.items() if number not in sections}
    assert not missing, f"sections cited but not in docs/reference.rst: {missing}"


def test_no_file_points_to_a_document_outside_the_repository():
    files = repository_files()
    assert REFERENCE in files
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        if is_text(path)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if any(pattern.search(line) for pattern in FOREIGN)
    ]
    assert not found, "\n".join(found)


def test_every_module_the_readme_lists_exists():
    paths = layout_paths(doctree(README))
    assert len(paths) > 5
    missing = [
        path
        for path in paths
        if not ((ROOT / path).is_dir() if path.endswith("/") else (ROOT / path).exists())
    ]
    assert not missing, f"the README's Layout lists paths that do not exist: {missing}"
