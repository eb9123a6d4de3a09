"""The rate limit on the wire: a restore of 60+ s at 200 KB/s, objects of up to a third of a
10-second window's budget, measured by a TCP proxy in front of Orthanc. Every 10-second
window between the first and the last byte carries the limit within 10 %."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from tapearc.catalog.journal import Journal
from tapearc.dicomnet.peer import Peer
from tapearc.jobs.delivery import SendOptions, run_restore, studies_in_folder
from tapearc.support.limits import Limits, RateSetting
from tests.dicomnet.orthanc import PACS_AET, Orthanc, free_port
from tests.synth import generate_studies

RATE = 200_000  # bytes per second (0.2 MB/s)
WINDOW = 10.0


@contextmanager
def counting_proxy(target_port: int) -> Iterator[tuple[int, list[tuple[float, int]]]]:
    """A TCP proxy to 127.0.0.1:``target_port``; yields its port and the (time, bytes) of every
    read from the client side (what the sender put on the wire)."""
    seen: list[tuple[float, int]] = []
    lock = threading.Lock()
    listener = socket.create_server(("127.0.0.1", free_port()))
    port = listener.getsockname()[1]
    done = threading.Event()

    def pump(src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(65536):
                if count:
                    with lock:
                        seen.append((time.monotonic(), len(data)))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def accept() -> None:
        listener.settimeout(0.2)
        while not done.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            server = socket.create_connection(("127.0.0.1", target_port))
            for args in ((client, server, True), (server, client, False)):
                threading.Thread(target=pump, args=args, daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield port, seen
    finally:
        done.set()
        thread.join()
        listener.close()


@pytest.mark.slow
def test_rate_holds_over_every_10s_window_of_a_60s_restore(
    orthanc: Orthanc, db: Any, tmp_path: Path
) -> None:
    # objects from 20 KB to 600 KB (a third of the 2 MB a 10 s window carries), mixed
    sizes = (600_000, 40_000, 320_000, 20_000, 450_000, 150_000, 560_000, 90_000)
    for n, size in enumerate(sizes):
        generate_studies(tmp_path / "src", 1, instances_per_study=6, series_per_study=1,
                         pixel_bytes=size, seed=40 + n)
    src = studies_in_folder(tmp_path / "src")
    total = sum(f.stat().st_size for f in (tmp_path / "src").rglob("*.dcm"))
    assert total >= 65 * RATE  # a run of 65 s or more
    with counting_proxy(orthanc.dicom_port) as (port, seen):
        peer = Peer(PACS_AET, "127.0.0.1", port)
        limits = Limits(default=RateSetting(mb_per_s=RATE / 1e6, concurrency=2))
        report = run_restore(src.refs, src.fetch, peer,
                             Journal.create(db, kind="restore", peer=str(peer)),
                             SendOptions(limits), instances=src.instances)
    assert report.complete, report.to_dict()
    start, end = seen[0][0], seen[-1][0]
    assert end - start >= 60
    worst_hi, worst_lo = 0.0, 9.0
    t = start
    while t + WINDOW <= end:
        sent = sum(n for at, n in seen if t <= at < t + WINDOW)
        worst_hi = max(worst_hi, sent / (RATE * WINDOW))
        worst_lo = min(worst_lo, sent / (RATE * WINDOW))
        t += 0.25
    print(f"{end - start:.1f} s, {total} bytes; 10 s windows from {worst_lo:.3f} to "
          f"{worst_hi:.3f} of the limit")
    assert worst_lo >= 0.9 and worst_hi <= 1.1, (worst_lo, worst_hi)
