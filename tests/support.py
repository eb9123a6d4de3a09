"""Helpers importable by any test module (``from tests.support import need_tool``).

``need_tool("xorriso")`` skips a test when the program is missing, except under
``TAPEARC_REQUIRE_TOOLS=1`` (set by ``./dev test`` as root, so in CI), where a missing tool fails
the test so that CI cannot go green by skipping.
"""

from __future__ import annotations

import os
import shutil

import pytest


def need_tool(*programs: str) -> None:
    """Skip (or, under TAPEARC_REQUIRE_TOOLS=1, fail) unless every program is on PATH."""
    missing = [p for p in programs if shutil.which(p) is None]
    if not missing:
        return
    message = f"needs {', '.join(missing)} on PATH"
    if os.environ.get("TAPEARC_REQUIRE_TOOLS") == "1":
        pytest.fail(message + " (TAPEARC_REQUIRE_TOOLS=1)")
    pytest.skip(message)
