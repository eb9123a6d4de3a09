"""Fixtures for the DICOM networking tests: a private network namespace, Orthanc, and data.

Slow tests (marker ``slow``, e.g. the 60 s rate-limit run) are skipped unless
``TAPEARC_RUN_SLOW=1`` or ``TAPEARC_REQUIRE_TOOLS=1`` (CI) is set, so CI always runs them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tapearc.dicomnet.peer import Peer
from tests.dicomnet.netns import can_unshare, is_isolated, private_netns
from tests.dicomnet.orthanc import PACS_AET, Orthanc
from tests.support import need_tool


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("TAPEARC_RUN_SLOW") == "1" or os.environ.get("TAPEARC_REQUIRE_TOOLS") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set TAPEARC_RUN_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords and "dicomnet" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture
def netns() -> Iterator[None]:
    """This test's thread in a private network namespace (or the run already is in one)."""
    need_tool("ip")
    if is_isolated():
        yield
        return
    reason = can_unshare()
    if reason is not None:
        if os.environ.get("TAPEARC_REQUIRE_TOOLS") == "1":
            pytest.fail(reason + " (TAPEARC_REQUIRE_TOOLS=1)")
        pytest.skip(reason)
    with private_netns():
        yield


@pytest.fixture
def start_orthanc(netns: None, tmp_path: Path) -> Iterator[Callable[..., Orthanc]]:
    """Start Orthanc servers with optional extra settings; all are killed after the test."""
    need_tool("Orthanc")
    started: list[Orthanc] = []

    def start(name: str = "orthanc", **kwargs: Any) -> Orthanc:
        o = Orthanc(tmp_path / name, **kwargs).start()
        started.append(o)
        return o

    yield start
    for o in started:
        o.stop(kill=True)  # storage is thrown away: no need for the 3 s clean shutdown


@pytest.fixture
def orthanc(start_orthanc: Callable[..., Orthanc]) -> Orthanc:
    """An empty Orthanc."""
    return start_orthanc()


@pytest.fixture
def pacs(orthanc: Orthanc) -> Peer:
    """The ``Peer`` of the ``orthanc`` fixture."""
    return Peer(PACS_AET, "127.0.0.1", orthanc.dicom_port)


@pytest.fixture(scope="session")
def synth_studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 small synthetic studies (CT/MR/CR, 3-6 instances each, 8 KiB of pixels)."""
    from tests.synth import generate_studies

    root = tmp_path_factory.mktemp("synth24")
    for k, n in enumerate((3, 4, 5, 6)):
        generate_studies(root, 6, instances_per_study=n, series_per_study=2,
                         pixel_bytes=8192, seed=10 + k)
    return root


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Any]:
    """An empty catalog (its migrations make the journal's tables)."""
    from tapearc.catalog import create_catalog

    with create_catalog(tmp_path / "catalog.db") as catalog:
        yield catalog


@pytest.fixture
def web_orthanc(start_orthanc: Callable[..., Orthanc], tmp_path: Path) -> Orthanc:
    """An empty Orthanc with Debian's DICOMweb plugin, serving HTTPS with a test CA's
    certificate (``orthanc.ca``); basic credentials ``tests.dicomnet.orthanc.USER``."""
    from tests.dicomnet.tlsca import make_pki

    need_tool("gcc")  # the libssl shim Orthanc's HTTPS needs on Debian 12 (orthanc.py)
    from tests.dicomnet.orthanc import DICOMWEB_PLUGIN

    if not DICOMWEB_PLUGIN.exists():
        if os.environ.get("TAPEARC_REQUIRE_TOOLS") == "1":
            pytest.fail(f"needs {DICOMWEB_PLUGIN} (orthanc-dicomweb)")
        pytest.skip(f"needs {DICOMWEB_PLUGIN} (apt install orthanc-dicomweb)")
    ca, certs = make_pki(tmp_path / "pki", ("orthanc",))
    return start_orthanc("web", dicomweb=True, https=(certs["orthanc"].cert,
                                                      certs["orthanc"].key), ca=ca)


@pytest.fixture
def web_peer(web_orthanc: Orthanc, tmp_path: Path) -> Any:
    """The ``WebPeer`` of ``web_orthanc``: its CA trusted, basic credentials from a 0600 file."""
    from tapearc.dicomnet.dicomweb import load_credentials, parse_web_peer
    from tapearc.dicomnet.peer import TlsOptions
    from tests.dicomnet.orthanc import PASSWORD, USER

    secret = tmp_path / "pacs-credentials"
    secret.write_text(f"{USER}:{PASSWORD}\n")
    secret.chmod(0o600)
    return parse_web_peer(web_orthanc.dicomweb_url, tls=TlsOptions(ca_file=web_orthanc.ca),
                          credentials=load_credentials("basic", file=secret))
