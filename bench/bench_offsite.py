"""Benchmark: tapearc's network pools against the plain tools, on loopback, same files, same run.

Run by hand (not in pytest), as root (sshd), in a private network namespace::

    unshare -n sh -c 'ip link set lo up; exec env PYTHONPATH=$PWD \\
        .venv/bin/python bench/bench_offsite.py [--mb 1024] [--rounds 3] [--dir DIR]'

Servers: OpenSSH's sshd and SeaweedFS' S3 gateway, started here on 127.0.0.1 as the tests start
them (``tests.drivers.remote.servers``). Data: at least ``--mb`` MB of synthetic CT studies
(512 KiB of pixels per instance), made once under ``--dir`` and read once into the page cache,
catalogued once per site. Each round runs, in rotated order:

* ``tapearc-sftp``: ``write_pool`` of every study to the sftp pool: plan, tar, SHA-256 of every
  instance, AES-256-GCM, upload over ``ssh`` with paramiko's SFTP, fsync, the server's own
  ``sha256sum`` of the archive, catalogue (a fresh volume each round: the last one is retired);
* ``scp``: OpenSSH's ``scp -r`` of the same folder (no encryption at rest, no confirmation),
  with OpenSSH's default cipher (chacha20-poly1305), and ``scp-aes`` with tapearc's
  (aes256-gcm, the sftp driver's first choice);
* ``tapearc-s3``: the same to the s3 pool (multipart, 16 MiB parts, per-part SHA-256);
* ``boto3``: ``upload_file`` of every file, 10 at a time (the AWS CLI's default concurrency).

MB/s = bytes of the source files / 10^6 / wall seconds. The ratio is the anchor's wall time
divided by tapearc's, within the same round (> 1: tapearc is faster). Medians are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tapearc.ingest.scan import ingest  # noqa: E402
from tapearc.jobs.write import write_pool  # noqa: E402
from tests.drivers.remote.servers import Sshd, Weed  # noqa: E402
from tests.jobs.offsite import offsite_site  # noqa: E402
from tests.jobs.site import Site  # noqa: E402


def make_data(root: Path, megabytes: int) -> tuple[Path, int]:
    """At least ``megabytes`` MB of studies under ``root/data`` (made once); (folder, bytes)."""
    from tests.synth import generate_studies

    data = root / "data"
    files = list(data.rglob("*.dcm")) if data.exists() else []
    total = sum(p.stat().st_size for p in files)
    if total < megabytes * 10**6:
        shutil.rmtree(data, ignore_errors=True)
        instances = -(-megabytes * 10**6 // (512 * 1024))
        generate_studies(data, -(-instances // 100), instances_per_study=100,
                         pixel_bytes=512 * 1024)
        files = list(data.rglob("*.dcm"))
        total = sum(p.stat().st_size for p in files)
    for path in files:  # into the page cache, for every contender alike
        path.read_bytes()
    return data, total


def site_on(root: Path, drive: dict[str, object], data: Path) -> Site:
    site = offsite_site(root, drive)
    site.pacs.rmdir()
    site.pacs.symlink_to(data)
    with site.catalog() as cat:
        ingest(cat, [site.pacs], quiet_seconds=0)
    return site


class Rounds:
    """A fresh network volume for each round of one site."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.n = 1
        self.barcode = "NET001"

    def __call__(self) -> None:
        with self.site.catalog() as cat:
            result = write_pool(self.site.settings, cat, "OFF")
            assert result.exit_code == 0 and result.pending == 0, result.needs
            cat.set_cartridge_state(self.barcode, "retired", "benchmark round done")
        self.n += 1
        self.barcode = f"NET{self.n:03d}"
        self.site.label(self.barcode, "OFF")


def scp(sshd: Sshd, data: Path, *cipher: str) -> Callable[[], None]:
    from tapearc.support.process import run_tool

    target = sshd.home / "scp"

    def run() -> None:
        shutil.rmtree(target, ignore_errors=True)
        run_tool(["scp", "-q", "-r", *cipher, "-F", "/dev/null", "-i", str(sshd.client_key), "-P",
                  str(sshd.port), "-o", "StrictHostKeyChecking=no", "-o",
                  "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", str(data),
                  f"root@127.0.0.1:{target}"], timeout=3600)

    return run


def boto3_upload(weed: Weed, data: Path) -> Callable[[], None]:
    client: Any = weed.client()
    bucket = weed.bucket("anchor")
    files = sorted(data.rglob("*.dcm"))

    def run() -> None:
        def one(path: Path) -> None:
            client.upload_file(str(path), bucket, f"anchor/{path.relative_to(data)}")

        with ThreadPoolExecutor(10) as pool:
            list(pool.map(one, files))

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/tapearc-bench-offsite"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    data, nbytes = make_data(args.dir, args.mb)
    work = Path(tempfile.mkdtemp(prefix="tapearc-bench-offsite-", dir=args.dir))
    for sub in ("ssh", "weed"):
        (work / sub).mkdir()
    sshd = Sshd(work / "ssh")
    weed = Weed(work / "weed")
    try:
        sftp_site = site_on(work / "sftp-site", {"driver": "sftp", **sshd.table()}, data)
        s3_site = site_on(work / "s3-site", {"driver": "s3", **weed.table(
            weed.bucket("tapearc"), part_size="16 MiB")}, data)
        contenders: dict[str, Callable[[], None]] = {
            "tapearc-sftp": Rounds(sftp_site), "scp": scp(sshd, data),
            "scp-aes": scp(sshd, data, "-c", "aes256-gcm@openssh.com"),
            "tapearc-s3": Rounds(s3_site), "boto3": boto3_upload(weed, data),
        }
        walls: dict[str, list[float]] = {name: [] for name in contenders}
        names = list(contenders)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                start = time.perf_counter()
                contenders[name]()
                walls[name].append(time.perf_counter() - start)
                print(f"round {r + 1} {name}: {walls[name][-1]:.2f} s "
                      f"({nbytes / 1e6 / walls[name][-1]:.0f} MB/s)", file=sys.stderr)
    finally:
        sshd.stop()
        weed.kill()
    result: dict[str, Any] = {"bytes": nbytes, "rounds": args.rounds, "cpus": os.cpu_count()}
    for name, wall in walls.items():
        result[name] = {"wall_s": round(statistics.median(wall), 2),
                        "mb_s": round(nbytes / 1e6 / statistics.median(wall), 1)}
    for ours, anchor in (("tapearc-sftp", "scp"), ("tapearc-sftp", "scp-aes"),
                         ("tapearc-s3", "boto3")):
        result[f"{ours}/{anchor}"] = round(statistics.median(
            a / o for a, o in zip(walls[anchor], walls[ours], strict=True)), 2)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{nbytes / 1e6:.0f} MB, {args.rounds} rounds, medians")
    for name in contenders:
        print(f"  {name:13s} {result[name]['wall_s']:7.2f} s {result[name]['mb_s']:7.1f} MB/s")
    print(f"  tapearc-sftp vs scp: {result['tapearc-sftp/scp']}x (same cipher: "
          f"{result['tapearc-sftp/scp-aes']}x); tapearc-s3 vs boto3 upload_file: "
          f"{result['tapearc-s3/boto3']}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
