"""Which HTTP layer sends STOW-RS: dicomweb-client against plain HTTP clients, same files.

Usage (as root, or under ``unshare -rn``; the clients compared are not tapearc dependencies, so
run it with a Python that has them: ``python3 -m venv V && V/bin/pip install dicomweb-client
httpx urllib3 pydicom cryptography``)::

    unshare -n sh -c 'ip link set lo up; exec V/bin/python bench/compare_http_clients.py'

Generates N synthetic CT instances (0.5 MB each), starts a fresh Orthanc with the DICOMweb plugin
over HTTPS (a test CA) for each client, and stores the files by STOW-RS in batches of B
instances from a child process per client, which reports its wall time, CPU seconds and peak
memory (ru_maxrss, minus the same process's peak before the first batch):

* ``dicomweb-client``: ``DICOMwebClient.store_instances`` with the files read by pydicom (the
  library takes Datasets; it writes each one back to bytes and joins the batch into one body);
* ``urllib3``: a generator yields the multipart body (part headers, then each file in 1 MiB
  reads), with a Content-Length computed from the file sizes;
* ``urllib3-chunked``: the same generator, no length (chunked transfer encoding);
* ``httpx``: the same generator as ``content=``, with the Content-Length.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLIENTS = ("dicomweb-client", "urllib3", "urllib3-chunked", "httpx")
READ = 1 << 20


def multipart(files: list[Path], boundary: str) -> tuple[Iterator[bytes], int]:
    """The STOW-RS body for ``files`` as a generator, and its length."""
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    tail = f"--{boundary}--\r\n".encode()
    length = sum(len(head) + f.stat().st_size + 2 for f in files) + len(tail)

    def gen() -> Iterator[bytes]:
        for f in files:
            yield head
            with open(f, "rb") as fh:
                while chunk := fh.read(READ):
                    yield chunk
            yield b"\r\n"
        yield tail

    return gen(), length


def worker(client: str, url: str, ca: str, user: str, password: str, files: list[Path],
           batch: int) -> dict[str, float]:
    """Store ``files`` with ``client``; the measurements of this process."""
    batches = [files[i:i + batch] for i in range(0, len(files), batch)]
    auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    ctx = ssl.create_default_context(cafile=ca)
    if client == "dicomweb-client":
        import pydicom
        import requests
        from dicomweb_client.api import DICOMwebClient

        session = requests.Session()
        session.verify = ca
        # requests replaces session.verify with $REQUESTS_CA_BUNDLE / $CURL_CA_BUNDLE when they
        # are set (they are on this machine): the configured CA would be ignored
        session.trust_env = False
        session.headers["Authorization"] = auth
        api = DICOMwebClient(url, session=session)

        def send(group: list[Path]) -> None:
            api.store_instances([pydicom.dcmread(f) for f in group])
    elif client.startswith("urllib3"):
        import urllib3

        pool = urllib3.PoolManager(ssl_context=ctx)
        chunked = client.endswith("chunked")

        def send(group: list[Path]) -> None:
            boundary = uuid.uuid4().hex
            body, length = multipart(group, boundary)
            headers = {"Authorization": auth, "Accept": "application/dicom+json",
                       "Content-Type": f'multipart/related; type="application/dicom"; '
                                       f"boundary={boundary}"}
            if not chunked:
                headers["Content-Length"] = str(length)
            r = pool.request("POST", f"{url}/studies", body=body, headers=headers,
                             chunked=chunked, retries=False)
            if r.status != 200:
                raise SystemExit(f"{client}: HTTP {r.status} {r.data[:200]!r}")
    elif client == "httpx":
        import httpx

        hc = httpx.Client(verify=ctx, timeout=300)

        def send(group: list[Path]) -> None:
            boundary = uuid.uuid4().hex
            body, length = multipart(group, boundary)
            r = hc.post(f"{url}/studies", content=body, headers={
                "Authorization": auth, "Accept": "application/dicom+json",
                "Content-Length": str(length),
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
            if r.status_code != 200:
                raise SystemExit(f"httpx: HTTP {r.status_code} {r.text[:200]}")
    else:
        raise SystemExit(f"unknown client {client}")
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for group in batches:
        send(group)
    return {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - cpu0,
            "rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=200)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--clients", default=",".join(CLIENTS))
    ap.add_argument("--work", type=Path)
    ap.add_argument("--worker", nargs=5, metavar=("CLIENT", "URL", "CA", "LIST", "BATCH"))
    args = ap.parse_args()
    from tests.dicomnet.orthanc import PASSWORD, USER, Orthanc

    if args.worker:
        client, url, ca, listing, batch = args.worker
        files = [Path(p) for p in Path(listing).read_text().split("\n") if p]
        print(json.dumps(worker(client, url, ca, USER, PASSWORD, files, int(batch))))
        return
    from tests.dicomnet.tlsca import make_pki
    from tests.synth import generate_studies

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-http-"))
    data = work / "data"
    if not data.exists():
        generate_studies(data, 1, instances_per_study=args.instances, series_per_study=2,
                         modalities=("CT",), pixel_bytes=512 * 512 * 2)
    files = sorted(str(p) for p in data.rglob("*") if p.is_file())
    listing = work / "files.txt"
    listing.write_text("\n".join(files))
    total = sum(os.path.getsize(f) for f in files) / 1e6
    ca, certs = make_pki(work / "pki", ("orthanc",))
    print(f"{len(files)} instances, {total:.0f} MB, batches of {args.batch}, HTTPS")
    print(f"{'client':18} {'s':>7} {'MB/s':>7} {'CPU s':>7} {'peak +MB':>9}")
    for client in args.clients.split(","):
        o = Orthanc(work / f"orthanc-{client}", dicomweb=True,
                    https=(certs["orthanc"].cert, certs["orthanc"].key), ca=ca).start()
        try:
            out = subprocess.run([sys.executable, __file__, "--worker", client, o.dicomweb_url,
                                  str(ca), str(listing), str(args.batch)],
                                 capture_output=True, text=True, check=False)
            if out.returncode:
                print(f"{client:18} failed: {(out.stderr or out.stdout).strip()[-300:]}")
                continue
            r = json.loads(out.stdout)
            held = o.statistics()["CountInstances"]
            note = "" if held == len(files) else f"  (Orthanc holds {held})"
            print(f"{client:18} {r['seconds']:7.2f} {total / r['seconds']:7.1f} {r['cpu']:7.2f} "
                  f"{r['rss_growth_mb']:9.0f}{note}")
        finally:
            o.stop(kill=True)


if __name__ == "__main__":
    main()
