"""A site with a network pool for the offsite tests: pools A and B on virtual tape, and pool OFF
on a real server (sshd or SeaweedFS, ``tests.drivers.remote.servers``)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.jobs.site import Site, make_site


def toml_table(name: str, table: dict[str, object]) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())


def offsite_site(root: Path, drive: dict[str, object], *, stream: dict[str, object] | None = None,
                 block_size: str = "64 KiB") -> Site:
    """A site whose pool OFF is on the drive table ``drive`` (with its ``driver``), labelled
    NET001; the receiver's staging is ``root/staging``."""
    extra = toml_table("drives.off", drive)
    extra += toml_table("pools.OFF", {"drive": "off", "vault": "cloud"})
    extra += toml_table("stream", {"max_age_minutes": 0.1, "interval": 1, **(stream or {})})
    extra += toml_table("receiver", {"staging": "staging", "allow": ["MODALITY@127.0.0.1"]})
    (root / "staging").mkdir(parents=True)
    site = make_site(root, block_size=block_size, extra=extra)
    site.label("NET001", "OFF")
    return site
