"""A PACS is reached by DIMSE (``AET@HOST:PORT``) or by DICOMweb (``https://host/dicom-web``):
one parser for both, and the query client that speaks the right one.

The reconcile, pull and restore take a ``PacsAddress`` and ask ``query_client`` for something
with ``find`` (C-FIND or QIDO-RS), ``holdings_client`` for ``study_sop_uids`` (the restore's
confirmation: tapearc's lean C-FIND or QIDO-RS), and ``store_sender`` for ``send_infos`` and
``submit``/``finished`` (C-STORE or STOW-RS); retrieving differs too much (C-GET/C-MOVE
contexts, WADO-RS resources): the pull picks its module by the type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from tapearc.dicomnet.dicomweb import Credentials, WebPeer, is_web_address, parse_web_peer
from tapearc.dicomnet.peer import Peer, TlsOptions, parse_peer

if TYPE_CHECKING:
    from tapearc.dicomnet.holdings import HoldingsClient
    from tapearc.dicomnet.qido import WebQueryClient
    from tapearc.dicomnet.query import QueryClient
    from tapearc.dicomnet.sender import StoreSender
    from tapearc.dicomnet.stow import StowSender
    from tapearc.support.limits import Limits, RateLimiter

PacsAddress: TypeAlias = Peer | WebPeer


def parse_pacs(text: str, *, tls: TlsOptions | None = None,
               credentials: Credentials | None = None) -> PacsAddress:
    """``AET@HOST:PORT`` (TLS only when ``tls`` is given) or a DICOMweb base URL (TLS when it
    is https, checked unless ``tls`` says otherwise; ``credentials`` only for DICOMweb)."""
    if is_web_address(text):
        return parse_web_peer(text, tls=tls, credentials=credentials)
    if credentials is not None:
        from tapearc.errors import UsageError

        raise UsageError("HTTP credentials are for a DICOMweb address (https://...)",
                         hint="drop --auth for an AET@HOST:PORT PACS")
    return parse_peer(text, tls=tls)


def query_client(peer: PacsAddress, *, local_aet: str = "TAPEARC",
                 timeout: float = 30.0) -> QueryClient | WebQueryClient:
    """C-FIND for a DIMSE peer, QIDO-RS for a DICOMweb one (use as a context manager)."""
    if isinstance(peer, WebPeer):
        from tapearc.dicomnet.qido import WebQueryClient

        return WebQueryClient(peer, timeout=timeout)
    from tapearc.dicomnet.query import QueryClient

    return QueryClient(peer, local_aet=local_aet, timeout=timeout)


def holdings_client(peer: PacsAddress, *, local_aet: str = "TAPEARC",
                    timeout: float = 30.0) -> HoldingsClient | WebQueryClient:
    """What the restore confirms with: which SOP instances of a study the PACS holds."""
    if isinstance(peer, WebPeer):
        from tapearc.dicomnet.qido import WebQueryClient

        return WebQueryClient(peer, timeout=timeout)
    from tapearc.dicomnet.holdings import HoldingsClient

    return HoldingsClient(peer, local_aet=local_aet, timeout=timeout)


def store_sender(peer: PacsAddress, *, local_aet: str, limits: Limits, limiter: RateLimiter,
                 timeout: float) -> StoreSender | StowSender:
    """C-STORE for a DIMSE peer, STOW-RS for a DICOMweb one: the same ``send_infos`` and
    ``SendResult``, the same pacing (use as a context manager)."""
    if isinstance(peer, WebPeer):
        from tapearc.dicomnet.stow import StowSender

        return StowSender(peer, limits=limits, limiter=limiter, timeout=max(timeout, 120.0))
    from tapearc.dicomnet.sender import StoreSender

    return StoreSender(peer, local_aet=local_aet, limits=limits, limiter=limiter,
                       timeout=timeout)
