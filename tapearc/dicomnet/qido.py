"""QIDO-RS: what a DICOMweb PACS holds, asked the way ``QueryClient`` asks by C-FIND.

``WebQueryClient.find(level, keys)`` takes C-FIND style keys (a value matches, an empty value
asks for the attribute, a list of UIDs matches any of them) and returns pydicom Datasets, so the
inventory (``PacsInventory``: reconcile and pull) and the restore's confirmation run over
DICOMweb unchanged. A StudyInstanceUID (and SeriesInstanceUID) to match goes into the path
(``/studies/{uid}/series/{uid}/instances``); a list of UIDs is sent comma-separated (PS3.18
8.3.4.1: measured on Orthanc's plugin 1.7, which matches nothing for a backslash-separated
list). Answers come in pages (``limit``/``offset``): the next page is asked while a page is
full or the server warns (PS3.18 8.3.4.4: a server that returns fewer matches than it has says
so in a Warning header), so a server that caps its answers still gives everything; one that
ignores ``limit`` gives it all in the first page. A 4xx answer to a
query raises ``QueryError``, as a C-FIND failure status does (the inventory then walks the
hierarchy instead of asking relational queries).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from tapearc.dicomnet.dicomweb import Busy, HttpError, Unreachable, WebClient, WebPeer, segment
from tapearc.dicomnet.query import QueryError
from tapearc.errors import UnavailableError
from tapearc.support.retry import retry

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

#: Results asked per request.
PAGE = 5000
#: A query is sent again this many times when the server does not answer or is busy.
QUERY_ATTEMPTS = 3
RESOURCE = {"STUDY": "studies", "SERIES": "series", "IMAGE": "instances"}


class WebQueryClient:
    """QIDO-RS client for one DICOMweb service; use as a context manager."""

    def __init__(self, peer: WebPeer, *, timeout: float = 60.0,
                 client: WebClient | None = None) -> None:
        self.peer = peer
        self.http = client or WebClient(peer, timeout=timeout)

    def __enter__(self) -> WebQueryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    @property
    def round_trips(self) -> int:
        return self.http.round_trips

    def find(self, level: str, keys: dict[str, Any]) -> list[Dataset]:
        """The matches of a C-FIND-style query at ``level`` (STUDY, SERIES, IMAGE)."""
        from pydicom.dataset import Dataset

        return [Dataset.from_json(item) for item in self.search(level, keys)]

    def search(self, level: str, keys: dict[str, Any]) -> list[dict[str, Any]]:
        """Like ``find``, the DICOM JSON objects as the server sent them."""
        path, fields = query_for(level, keys)
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            page, warned = self._page(path, {**fields, "limit": str(PAGE),
                                             "offset": str(offset)})
            out += page
            # longer than asked: the server ignored limit and gave everything
            if not page or len(page) > PAGE or (len(page) < PAGE and not warned):
                return out
            offset += len(page)

    def _page(self, path: str, fields: dict[str, str]) -> tuple[list[dict[str, Any]], bool]:
        def attempt() -> tuple[list[dict[str, Any]], bool]:
            try:
                resp = self.http.request("GET", path, fields=fields,
                                         headers={"Accept": "application/dicom+json"})
            except HttpError as exc:
                raise QueryError(f"{self.peer} refused the query {path}: {exc}",
                                 hint="check that the PACS supports this QIDO-RS query") from None
            warning = resp.headers.get("Warning")
            if warning:
                log.info("QIDO-RS %s: the PACS warns %r", path, warning[:200])
            if resp.status == 204 or not resp.data:
                return [], False
            try:
                items = json.loads(resp.data)
            except ValueError:
                raise QueryError(f"{self.peer} answered {path} with something that is not "
                                 "DICOM JSON") from None
            if not isinstance(items, list):
                raise QueryError(f"{self.peer} answered {path} with a JSON {type(items).__name__},"
                                 " not a list")
            return items, bool(warning)

        try:
            return retry(attempt, attempts=QUERY_ATTEMPTS, transient=(Unreachable, Busy),
                         delay=lambda n: 0.5 * 2 ** (n - 1))
        except UnavailableError as exc:
            raise UnavailableError(f"QIDO-RS to {self.peer}: {exc.message}",
                                   hint=exc.hint) from None

    # --- what the restore asks ---------------------------------------------------------------

    def study_sop_uids(self, study_uid: str) -> set[str]:
        """SOP Instance UIDs the PACS holds of a study (empty when it holds none)."""
        return {uid for item in self.search("IMAGE", {"StudyInstanceUID": study_uid,
                                                      "SOPInstanceUID": ""})
                if (uid := value(item, "00080018"))}

    def study_instance_count(self, study_uid: str) -> int:
        """Instances the PACS holds of a study (0 when absent)."""
        found = self.search("STUDY", {"StudyInstanceUID": study_uid,
                                      "NumberOfStudyRelatedInstances": ""})
        if not found:
            return 0
        try:
            return int(value(found[0], "00201208"))
        except ValueError:  # not filled in: count the instances
            return len(self.study_sop_uids(study_uid))


def query_for(level: str, keys: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The QIDO-RS path and query fields of a C-FIND-style query."""
    from pydicom.datadict import tag_for_keyword

    if level not in RESOURCE:
        raise ValueError(f"unknown query level {level!r}")
    keys = {k: v for k, v in keys.items() if k != "QueryRetrieveLevel"}
    path = ""
    study = keys.get("StudyInstanceUID")
    if level != "STUDY" and isinstance(study, str) and study:
        path = f"/studies/{segment(study)}"
        keys.pop("StudyInstanceUID")
        series = keys.get("SeriesInstanceUID")
        if level == "IMAGE" and isinstance(series, str) and series:
            path += f"/series/{segment(series)}"
            keys.pop("SeriesInstanceUID")
    path += f"/{RESOURCE[level]}"
    fields: dict[str, str] = {}
    include: list[str] = []
    for keyword, wanted in keys.items():
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"unknown DICOM keyword {keyword!r}")
        if wanted is None or wanted == "" or wanted == []:
            include.append(f"{tag:08X}")
        elif isinstance(wanted, list | tuple):
            fields[keyword] = ",".join(str(v) for v in wanted)
        else:
            fields[keyword] = str(wanted)
    if include:
        fields["includefield"] = ",".join(include)
    return path, fields


def value(item: dict[str, Any], tag: str) -> str:
    """The first value of ``tag`` in a DICOM JSON object, as text ("" when absent)."""
    values = (item.get(tag) or {}).get("Value") or []
    first = values[0] if values else ""
    if isinstance(first, dict):  # a person name: never needed here
        return ""
    return str(first).strip()
