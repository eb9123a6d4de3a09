"""Paths of the recorded fixtures and fake programs of the changer, LTFS and TapeAlert tests.

Each fixture under ``tests/fixtures/{mtx,ltfs,sg_logs}/`` starts with a ``#`` header naming its
source, ended by a ``#---`` line; the fake programs strip it the same way (``sed '1,/^#---$/d'``).
"""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[2]
FIXTURES = TESTS / "fixtures"
FAKES = TESTS / "fakes"


def fixture_path(kind: str, name: str) -> Path:
    """``tests/fixtures/<kind>/<name>``, which must exist."""
    path = FIXTURES / kind / name
    assert path.is_file(), path
    return path


def fixture_text(kind: str, name: str) -> str:
    """The recorded output in a fixture, without its source header."""
    text = fixture_path(kind, name).read_text()
    head, sep, body = text.partition("#---\n")
    assert sep and head.startswith("#"), f"{kind}/{name} has no '#' source header ending in #---"
    return body
