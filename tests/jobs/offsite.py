"""A site with a network pool for the offsite tests: pools A and B on virtual tape, and pool OFF
on a real sshd (``tests.drivers.remote.servers.Sshd``) whose disk is a folder of the test."""

from __future__ import annotations

import json
from pathlib import Path

from tests.drivers.remote.servers import Sshd
from tests.jobs.site import Site, make_site


def toml_table(name: str, table: dict[str, object]) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())


def offsite_site(root: Path, sshd: Sshd, *, drive: dict[str, object] | None = None,
                 stream: dict[str, object] | None = None, block_size: str = "64 KiB") -> Site:
    """A site whose pool OFF streams to ``sshd``; the receiver's staging is ``root/staging``."""
    extra = toml_table("drives.off", {"driver": "sftp", **sshd.table(**(drive or {}))})
    extra += toml_table("pools.OFF", {"drive": "off", "vault": "cloud"})
    extra += toml_table("stream", {"max_age_minutes": 0.1, "interval": 1, **(stream or {})})
    extra += toml_table("receiver", {"staging": "staging", "allow": ["MODALITY@127.0.0.1"]})
    (root / "staging").mkdir(parents=True)
    site = make_site(root, block_size=block_size, extra=extra)
    site.label("NET001", "OFF")
    return site
