"""A private network namespace for the tests' Orthanc (it always listens on 0.0.0.0).

Two ways are supported:

* the whole test run already sits in an isolated namespace (CI runs ``unshare -n`` and brings
  ``lo`` up): ``ip -o link`` lists only ``lo``, and Orthanc is started directly;
* otherwise, as root, the test's thread moves into a fresh namespace with ``unshare(2)``
  (``CLONE_NEWNET`` is per thread), brings ``lo`` up, and moves back with ``setns(2)`` when the
  test ends. Orthanc, dcmtk and every pynetdicom thread started meanwhile inherit the namespace,
  so client and server meet on a loopback nobody else can reach.

Without either, the tests skip (fail under TAPEARC_REQUIRE_TOOLS=1) with the reason.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tapearc.support.process import run_tool

CLONE_NEWNET = 0x40000000


def links() -> list[str]:
    """Names of the network interfaces this thread sees."""
    out = run_tool(["ip", "-o", "link"], timeout=10).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def is_isolated() -> bool:
    """True when only the loopback interface exists (a private namespace)."""
    return links() == ["lo"]


def can_unshare() -> str | None:
    """None if this process can create a network namespace, else the reason it cannot."""
    if os.geteuid() != 0:
        return "creating a network namespace needs root (or run the tests under `unshare -rn`)"
    return None


@contextmanager
def private_netns() -> Iterator[None]:
    """Run the body with this thread in a new network namespace whose ``lo`` is up."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
        try:
            run_tool(["ip", "link", "set", "lo", "up"], timeout=10)
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns back to the original namespace: {os.strerror(err)}")
    finally:
        os.close(home)
