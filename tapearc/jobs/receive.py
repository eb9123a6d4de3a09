"""``tapearc receive``: the C-STORE receiver as a service, from ``[receiver]`` and the command line."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from tapearc.config import ReceiverTable
from tapearc.dicomnet.peer import TlsOptions
from tapearc.dicomnet.receiver import Receiver, ReceiverPolicy, StagingWriter, parse_allowed
from tapearc.errors import UsageError


@dataclass(frozen=True)
class ReceiveOptions:
    """Where to listen, who may send, and where received files go."""

    staging: Path | None
    aet: str = "TAPEARC"
    bind: str = "127.0.0.1"
    port: int = 11112
    allow: tuple[str, ...] = ()
    max_object_bytes: int = 4 << 30
    max_associations: int = 4
    tls: TlsOptions | None = None

    @classmethod
    def from_table(cls, table: ReceiverTable) -> ReceiveOptions:
        """The configured ``[receiver]``."""
        return cls(staging=table.staging, aet=table.aet, bind=table.bind, port=table.port,
                   allow=tuple(table.allow), max_object_bytes=table.max_object_size,
                   max_associations=table.max_associations)

    def override(self, **given: object) -> ReceiveOptions:
        """These options with the command line's values where it gave one (not None)."""
        return replace(self, **{k: v for k, v in given.items() if v is not None})  # type: ignore[arg-type]


def start_receiver(options: ReceiveOptions) -> Receiver:
    """Check the options (``UsageError``, exit 2) and start listening; ``stop()`` the result."""
    if options.staging is None:
        raise UsageError("no staging folder for received studies",
                         hint="pass --staging DIR or set receiver.staging in the config")
    policy = ReceiverPolicy(tuple(parse_allowed(a) for a in options.allow),
                            max_object_bytes=options.max_object_bytes,
                            max_associations=options.max_associations)
    return Receiver(options.staging, aet=options.aet, host=options.bind, port=options.port,
                    policy=policy, tls=options.tls).start()


def receive_until_stopped(options: ReceiveOptions,
                          started: Callable[[], None] | None = None) -> StagingWriter:
    """Receive until SIGTERM or SIGINT (Ctrl-C); ``started`` is called once the receiver
    listens. Returns its writer, which counts what was received."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    receiver = start_receiver(options)
    if started is not None:
        started()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        receiver.stop()
    return receiver.writer
