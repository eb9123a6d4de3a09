"""What every tapearc association shares: the local AE, TCP_NODELAY, and typed failures.

pynetdicom 3.0.4 never sets TCP_NODELAY, and with Nagle plus delayed ACKs each C-STORE stalls
about 40 ms (measured against Orthanc: 34 -> 53 instances/s). We set it on every socket from an
``EVT_CONN_OPEN`` handler, which fires for the sockets we connect and the ones we accept.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tapearc.dicomnet.peer import Peer, check_aet
from tapearc.errors import ConfigError, UnavailableError

if TYPE_CHECKING:
    from pynetdicom import AE
    from pynetdicom.association import Association
    from pynetdicom.events import Event

log = logging.getLogger(__name__)

#: Largest PDU we offer to receive (the peer fragments to its own limit when sending).
MAX_PDU = 262144
DEFAULT_TIMEOUT = 30.0
#: pynetdicom's DUL thread sleeps ``_run_loop_delay`` (1 ms) whenever it finds nothing to do,
#: which adds up to about a millisecond to every response. While messages flow it polls every
#: 0.3 ms (measured on one C-STORE association: 125 -> 140-157 instances/s; 0.1 ms was no faster
#: with three, the spinning threads compete for the GIL), and goes back to 1 ms when the
#: association may idle for minutes.
FAST_LOOP_S = 0.0003
IDLE_LOOP_S = 0.001


def set_nodelay(event: Event) -> None:
    """``EVT_CONN_OPEN`` handler: disable Nagle on the association's socket."""
    sock = event.assoc.dul.socket
    raw = getattr(sock, "socket", None)
    if raw is not None:
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:  # a socket closed under us: the association will fail on its own
            log.debug("cannot set TCP_NODELAY: %s", exc)


def nodelay_handlers() -> list[Any]:
    """The event handler list to pass to ``associate``/``start_server``."""
    from pynetdicom import evt

    return [(evt.EVT_CONN_OPEN, set_nodelay)]


def _keep_responses_for_caller(assoc: Association) -> None:
    """Stop the association's reactor thread from taking DIMSE messages off the queue.

    pynetdicom 3.0.4 pauses its reactor around each ``send_*`` with an Event and a flag, and the
    two are not checked atomically: the reactor can pass the checkpoint just before the pause,
    then take the C-STORE response off the queue itself (and drop it, it is not a request). The
    sender then waits for the whole DIMSE timeout and the instance must be sent again (seen here
    as a 30 s stall in about one run of 500 instances in five, more often under CPU load). On
    the associations we request, the peer never sends requests we must serve (C-GET's C-STOREs
    are read by ``send_c_get`` itself, blocking), so the reactor's non-blocking read can return
    nothing, always.
    """
    dimse = assoc.dimse
    original = dimse.get_msg

    def get_msg(block: bool = False) -> Any:
        if not block:
            return None, None
        return original(block=True)

    dimse.get_msg = get_msg  # type: ignore[method-assign]
    # With nothing left for the reactor to take, pausing it around each request only costs
    # time: pynetdicom waits for the reactor's next 1 ms tick (about 0.5 ms per instance).
    assoc.__class__ = _never_paused_class(type(assoc))


_NEVER_PAUSED: dict[type, type] = {}


def _never_paused_class(base: type) -> type:
    """A subclass of ``base`` whose ``_is_paused`` always reads True (assignments ignored)."""
    if base not in _NEVER_PAUSED:

        def get(self: Any) -> bool:
            return True

        def put(self: Any, value: bool) -> None:
            pass

        _NEVER_PAUSED[base] = type(
            f"NeverPaused{base.__name__}", (base,), {"_is_paused": property(get, put)}
        )
    return _NEVER_PAUSED[base]


def make_ae(local_aet: str, *, timeout: float = DEFAULT_TIMEOUT) -> AE:
    """A pynetdicom AE with our title and timeouts (no unbounded waits)."""
    from pynetdicom import AE, _config

    # pynetdicom's default event handlers format every PDU and DIMSE message for its DEBUG log
    # (identifiers included, which may hold patient names) even when nothing is logged: about
    # a fifth of the sender's CPU per instance. We log our own one-line events instead.
    _config.LOG_HANDLER_LEVEL = "none"
    _config.LOG_RESPONSE_IDENTIFIERS = False
    pn_log = logging.getLogger("pynetdicom")
    if pn_log.level == logging.NOTSET:
        pn_log.setLevel(logging.CRITICAL)
    ae = AE(ae_title=check_aet(local_aet, "calling AE title"))
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = timeout
    ae.maximum_pdu_size = MAX_PDU
    return ae


def associate(
    ae: AE,
    peer: Peer,
    *,
    ext_neg: Sequence[Any] | None = None,
    extra_handlers: Sequence[Any] = (),
) -> Association:
    """Open an association to ``peer`` with the AE's requested contexts, or raise.

    A refused connection or a TLS failure raises ``UnavailableError``; a rejection by the
    peer (unknown AE title, no acceptable context) raises ``ConfigError``.
    """
    try:
        assoc = ae.associate(
            peer.host,
            peer.port,
            ae_title=peer.aet,
            max_pdu=MAX_PDU,
            ext_neg=list(ext_neg) if ext_neg else None,
            tls_args=peer.tls_args(),
            evt_handlers=[*nodelay_handlers(), *extra_handlers],
        )
    except OSError as exc:  # the host name does not resolve
        raise UnavailableError(f"no association with {peer}: {exc.strerror or exc}",
                               hint="check the PACS's host name and the DNS") from None
    if assoc.is_established:
        _keep_responses_for_caller(assoc)
        return assoc
    if assoc.is_rejected:
        raise ConfigError(
            f"{peer} rejected the association from {ae.ae_title}",
            hint="check the called and calling AE titles and that the PACS knows this host",
        )
    raise UnavailableError(
        f"no association with {peer}: the PACS does not answer or the connection was aborted",
        hint="check that the PACS is running, the address and port, and the TLS settings",
    )


def set_loop_delay(assoc: Association | None, seconds: float) -> None:
    """How long the association's DUL thread sleeps when it finds nothing to do."""
    dul = getattr(assoc, "dul", None)
    if dul is not None and hasattr(dul, "_run_loop_delay"):
        dul._run_loop_delay = seconds
