"""A throw-away site for job tests (virtual tape drives, or disk volumes): config, catalog,
keys, samples."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tapearc.catalog import Catalog, create_catalog, open_catalog
from tapearc.config import Settings, load_settings
from tapearc.format.keys import (
    Identity,
    SigningKey,
    generate_keypair,
    generate_signing_key,
    load_identity,
    load_signing_key,
)
from tapearc.jobs.cartridge import label_cartridge
from tests.support import SIGNING_PASSPHRASE

PASSPHRASE = "correct horse battery staple"

CONFIG = """
[site]
name = "testsite"
[ingest]
sources = ["pacs"]
quiet_seconds = 0
[keys]
recipients = ["keys/site.pub", "keys/escrow.pub"]
identities = ["keys/site.key"]
signing_key = "keys/sign-test.key"
trusted_signers = ["keys/sign-test.pub"]
[archive]
block_size = "{block_size}"
max_archive_bytes = "{max_archive}"
read_rate = {read_rate}
[verify]
after_write = "{verify}"
[drives.da]
driver = "{driver}"
path = "{media}"
capacity = "{capacity}"
[drives.db]
driver = "{driver}"
path = "{media}"
capacity = "{capacity}"
[pools.A]
drive = "da"
vault = "north"
[pools.B]
drive = "db"
vault = "south"
"""


@dataclass
class Site:
    """A ready site: its folder, settings, the site private key and signing key."""

    root: Path
    settings: Settings
    identity: Identity
    signer: SigningKey

    @property
    def config(self) -> Path:
        return self.root / "tapearc.toml"

    @property
    def pacs(self) -> Path:
        return self.root / "pacs"

    def catalog(self) -> Catalog:
        return open_catalog(self.settings.catalog_path)

    def label(self, barcode: str, pool: str) -> None:
        with self.catalog() as cat:
            label_cartridge(self.settings, cat, barcode, pool)


def make_site(root: Path, *, block_size: str = "64 KiB", max_archive: str = "1 GiB",
              capacity: str = "256 MiB", read_rate: int = 0, verify: str = "all",
              extra: str = "", driver: str = "vtape") -> Site:
    """Create the site folder with keys made by the real key code (cheap scrypt for tests);
    ``extra`` is appended to the config (more tables).

    ``driver``: ``vtape`` (cartridges in ``vtapes/``) or ``disk`` (volumes in ``volumes/``).
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "pacs").mkdir(exist_ok=True)
    media = {"vtape": "vtapes", "disk": "volumes"}[driver]
    (root / media).mkdir(exist_ok=True)
    (root / "tapearc.toml").write_text(CONFIG.format(
        block_size=block_size, max_archive=max_archive, capacity=capacity,
        read_rate=read_rate, verify=verify, driver=driver, media=media) + extra)
    keys = root / "keys"
    keys.mkdir(mode=0o700)
    for name in ("site", "escrow"):
        generate_keypair(keys, name, PASSPHRASE, scrypt_log2n=12)
    generate_signing_key(keys, "sign-test", SIGNING_PASSPHRASE, scrypt_log2n=12)
    create_catalog(root / "catalog.sqlite").close()
    settings = load_settings(root / "tapearc.toml")
    identity = load_identity(keys / "site.key", PASSPHRASE)
    signer = load_signing_key(keys / "sign-test.key", SIGNING_PASSPHRASE)
    return Site(root, settings, identity, signer)
