"""Helpers importable by any test module (``from tests.support import need_tool``).

``need_tool("xorriso")`` skips a test when the program is missing, except under
``TAPEARC_REQUIRE_TOOLS=1`` (set by ``./dev test`` as root, so in CI), where a missing tool fails
the test so that CI cannot go green by skipping.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tapearc.drivers.base import Driver

#: Passphrase of the signing keys test sites make; tests/conftest.py puts it in
#: TAPEARC_SIGNING_PASSPHRASE, as an unattended writing host has it.
SIGNING_PASSPHRASE = "signing key of the test sites"


def need_tool(*programs: str) -> None:
    """Skip (or, under TAPEARC_REQUIRE_TOOLS=1, fail) unless every program is on PATH."""
    missing = [p for p in programs if shutil.which(p) is None]
    if not missing:
        return
    message = f"needs {', '.join(missing)} on PATH"
    if os.environ.get("TAPEARC_REQUIRE_TOOLS") == "1":
        pytest.fail(message + " (TAPEARC_REQUIRE_TOOLS=1)")
    pytest.skip(message)


def make_driver(driver: str, drive: str, table: Mapping[str, object], base: Path,
                block_size: int) -> Driver:
    """The driver of a ``[drives.NAME]`` table, read through the config schema as at start
    (paths relative to ``base``; a bad key raises the ConfigError a command would)."""
    from tapearc.config import drive_config
    from tapearc.drivers import make_driver as build

    cfg = drive_config(drive, {"driver": driver, **table}, base)
    return build(cfg.driver, drive, cfg.options, block_size)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``tapearc ARGV`` in-process through ``main`` (the real error handler): exit code,
    stdout, stderr."""
    from tapearc.cli import main

    old = sys.argv
    sys.argv = ["tapearc", *argv]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err
