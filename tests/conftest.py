"""Shared fixtures: a clean environment for every test, and the tool/rig gates.

Tests that need an external program call ``tests.support.need_tool``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import SIGNING_PASSPHRASE


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No TAPEARC_* setting leaks in from the shell; HOME and XDG dirs point into tmp_path. The
    signing key passphrase of the test sites is set, as on an unattended writing host."""
    for key in list(os.environ):
        if key.startswith("TAPEARC_") and key != "TAPEARC_REQUIRE_TOOLS":
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    # set apart from monkeypatch: a test's monkeypatch.undo() must not take it away mid-test
    os.environ["TAPEARC_SIGNING_PASSPHRASE"] = SIGNING_PASSPHRASE
    yield
    os.environ.pop("TAPEARC_SIGNING_PASSPHRASE", None)
    # a CLI test run in-process configures the package logger; later tests (caplog) need it plain
    package_log = logging.getLogger("tapearc")
    package_log.handlers.clear()
    package_log.setLevel(logging.NOTSET)
    package_log.propagate = True
