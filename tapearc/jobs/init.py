"""``tapearc init DIR``: a commented config, an empty catalog (0600), the key pairs and the
site signing key.

With ``virtual=True`` the site is ready to run at once: two virtual tape drives (one per copy
pool), a PACS storage folder holding real sample studies shipped with pydicom, and demo keys whose
passphrase is kept beside them (a demo convenience that a real site must not copy).
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from tapearc.errors import UsageError

CONFIG_NAME = "tapearc.toml"

CONFIG_TEMPLATE = """\
# tapearc configuration. Paths are relative to this file's folder.
# Reference: README.md (Configuration) and docs/OPERATIONS.md.

[site]
# Short site code written on every cartridge label. Never patient data.
name = "{site}"
# The catalog (holds PHI: keep it 0600, it is copied encrypted onto every cartridge written).
catalog = "catalog.sqlite"
# One nightly run at a time: a second run exits 75 and names the holder.
lock = "tapearc.lock"

[ingest]
# PACS storage folders to scan (any layout: Orthanc, dcm4chee, DICOMDIR media).
sources = [{sources}]
# Files modified less than this many seconds ago are left for the next run (still being written).
quiet_seconds = {quiet}

[keys]
directory = "keys"
# Public keys every archive is encrypted to: the site key and the offline escrow key.
recipients = ["keys/site.pub", "keys/escrow.pub"]
# Private keys used to read archives back (recall, verify). Passphrase: TAPEARC_PASSPHRASE or a prompt.
identities = ["keys/site.key"]
# The site signing key: the writing host signs every archive with it (it decrypts nothing).
# Passphrase: TAPEARC_SIGNING_PASSPHRASE, the systemd credential tapearc-signing, or as above.
signing_key = "keys/{signer}.key"
# Signing public keys whose archives are trusted; everything else is refused (exit 65).
trusted_signers = ["keys/{signer}.pub"]

[archive]
# One tape block = one encrypted chunk. 1 MiB keeps LTO drives streaming.
block_size = "1 MiB"
# Cap on the PACS read rate in bytes/s (0 = no cap), so clinicians keep their disk.
read_rate = 0
# Memory buffer between the encrypting stream and the drive.
buffer = "64 MiB"
# Studies are grouped into archives of at most this size (a study is never split unless it
# is larger than a cartridge's free space).
max_archive_bytes = "{max_archive}"

[verify]
# After writing: read back "all", a "sample" of archives, or "none".
after_write = "sample"
sample = 2

# The PACS the nightly reconciles with (C-FIND): every instance it holds must be archived on
# every pool. With staging, it also fetches what the archive lacks (C-GET; "move" needs move_port).
# [pacs]
# address = "ORTHANC@pacs.example.org:104"
# aet = "TAPEARC"
# staging = "pull"
# A cloud PACS is reached by DICOMweb instead (QIDO-RS, WADO-RS); the secret is never written
# here: a file only this user reads ("bearer": the token, "basic": user:password), or a variable.
# address = "https://pacs.example.org/dicom-web"
# auth = "bearer"
# auth_file = "/etc/tapearc/pacs.token"   # or auth_env = "PACS_TOKEN"
# [reconcile]
# lookback_days = 7         # studies of the last days are checked by identity every night
# full_weekday = "sunday"   # every study checked by identity

{drives}
"""

VIRTUAL_DRIVES = """\
# Two virtual tape drives (file-backed, with the st driver's semantics), one per copy pool.
[drives.vtape-a]
driver = "vtape"
path = "vtapes"
capacity = "4 GiB"

[drives.vtape-b]
driver = "vtape"
path = "vtapes"
capacity = "4 GiB"

[pools.A]
drive = "vtape-a"
vault = "vault-north"
media = "LTO-9"

[pools.B]
drive = "vtape-b"
vault = "vault-south"
media = "LTO-9"
"""

REAL_DRIVES = """\
# One LTO drive per copy pool (mt-st and the no-rewind st device), or one drive shared by both
# pools with an operator who swaps cartridges.
[drives.lto1]
driver = "tape"
device = "/dev/nst0"

[pools.A]
drive = "lto1"
vault = "vault-north"
media = "LTO-9"

[pools.B]
drive = "lto1"
vault = "vault-south"
media = "LTO-9"
"""


@dataclass(frozen=True)
class InitResult:
    """What ``init`` created."""

    directory: Path
    config: Path
    catalog: Path
    keys: list[Path]
    samples: int


def init_site(directory: Path, *, virtual: bool, site: str = "demo-site",
              passphrase: str | None = None) -> InitResult:
    """Create a site folder; refuses a folder that already holds a config."""
    from tapearc.catalog.db import create_catalog

    directory = directory.resolve()
    config = directory / CONFIG_NAME
    if config.exists():
        raise UsageError(f"{config} already exists", hint="choose an empty folder")
    # the passphrase first: a failure here must leave nothing half-made behind
    demo_secret = False
    if passphrase is None:
        passphrase = os.environ.get("TAPEARC_PASSPHRASE")
    if passphrase is None:
        if virtual:
            passphrase, demo_secret = secrets.token_urlsafe(24), True
        else:
            from tapearc.format.keys import passphrase_from_env_or_prompt

            passphrase = passphrase_from_env_or_prompt(confirm=True)
    directory.mkdir(parents=True, exist_ok=True)
    samples = 0
    if virtual:
        samples = copy_sample_studies(directory / "pacs")
        (directory / "vtapes").mkdir(exist_ok=True)
    signer = signing_key_name()
    config.write_text(CONFIG_TEMPLATE.format(
        site=site,
        signer=signer,
        sources='"pacs"' if virtual else '"/var/lib/orthanc/db"',
        quiet=0 if virtual else 300,
        max_archive="1 GiB" if virtual else "64 GiB",
        drives=VIRTUAL_DRIVES if virtual else REAL_DRIVES,
    ))
    create_catalog(directory / "catalog.sqlite").close()
    keys = make_site_keys(directory / "keys", passphrase, keep_passphrase=demo_secret,
                          signer=signer)
    return InitResult(directory, config, directory / "catalog.sqlite", keys, samples)


def signing_key_name() -> str:
    """``sign-YYYY``: a signing key is named for the year it starts signing (rotation)."""
    from tapearc.support import clock

    return f"sign-{clock.now().year}"


def make_site_keys(keys_dir: Path, passphrase: str, *, keep_passphrase: bool,
                   signer: str) -> list[Path]:
    """Generate the site and escrow key pairs and the signing key; a demo site keeps its
    passphrase in a file."""
    from tapearc.format.keys import generate_keypair, generate_signing_key

    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if keep_passphrase:
        secret = keys_dir / "demo-passphrase"
        fd = os.open(secret, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(passphrase + "\n")
    created = []
    for name in ("site", "escrow"):
        generate_keypair(keys_dir, name, passphrase)
        created += [keys_dir / f"{name}.pub", keys_dir / f"{name}.key"]
    generate_signing_key(keys_dir, signer, passphrase)
    return [*created, keys_dir / f"{signer}.pub", keys_dir / f"{signer}.key"]


def sample_dicom_dirs() -> list[Path]:
    """Folders of real DICOM studies shipped inside pydicom's wheel (no download)."""
    import pydicom.data

    base = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests"
    if not base.is_dir():
        raise UsageError("pydicom's sample studies are missing", hint="reinstall pydicom")
    return [base]


def copy_sample_studies(dest: Path) -> int:
    """Copy the sample studies (files referenced by the DICOMDIRs) to ``dest``; count files."""
    count = 0
    for src in sample_dicom_dirs():
        for path in sorted(src.rglob("*")):
            # the studies only: not the media's DICOMDIR index nor the notes beside it
            if not path.is_file() or path.name.upper().startswith(("DICOMDIR", "README")) or \
                    path.suffix == ".txt":
                continue
            target = dest / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            count += 1
    return count
