"""``tapearc decrypt``: straight from a virtual cartridge, and never harming the output path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tapearc.jobs.nightly import run_nightly
from tests.jobs.site import PASSPHRASE, Site, make_site
from tests.support import need_tool
from tests.synth import generate_studies


def _site(tmp_path: Path) -> Site:
    site = make_site(tmp_path / "site")
    site.label("A00001", "A")
    site.label("B00001", "B")
    generate_studies(site.pacs, 2, instances_per_study=2, pixel_bytes=8_000)
    assert run_nightly(site.settings).exit_code == 0
    return site


def _decrypt(site: Site, *args: str, passphrase: str = PASSPHRASE) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "TAPEARC_CONFIG": str(site.config), "TAPEARC_PASSPHRASE": passphrase}
    return subprocess.run([sys.executable, "-m", "tapearc", "decrypt", *args], env=env,
                          capture_output=True, timeout=120)


def test_decrypt_reads_a_virtual_cartridge_for_gnu_tar(tmp_path: Path) -> None:
    need_tool("tar")
    site = _site(tmp_path)
    tape = site.root / "vtapes" / "A00001.vtape"
    done = _decrypt(site, str(tape), "--file", "1")
    assert done.returncode == 0, done.stderr
    listing = subprocess.run(["tar", "tf", "-"], input=done.stdout, capture_output=True, check=True)
    names = listing.stdout.decode().split()
    assert len(names) == 4 and all(n.endswith(".dcm") and n.count("/") == 2 for n in names)
    index = _decrypt(site, str(tape), "--file", "2")
    assert index.returncode == 0 and index.stdout.startswith(b'{"format":"tapearc-index"')


def test_a_failed_decrypt_leaves_the_output_path_alone(tmp_path: Path) -> None:
    site = _site(tmp_path)
    tape = site.root / "vtapes" / "A00001.vtape"
    keep = tmp_path / "keep.txt"
    keep.write_text("precious\n")
    done = _decrypt(site, str(tape), "-o", str(keep), passphrase="wrong")
    assert done.returncode == 65
    assert keep.read_text() == "precious\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    out = tmp_path / "plain.tar"
    assert _decrypt(site, str(tape), "-o", str(out)).returncode == 0
    assert out.stat().st_mode & 0o777 == 0o600  # plaintext holds PHI
