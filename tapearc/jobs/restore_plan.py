"""The restore plan: which cartridge each study is read from, in which order, and the one list
of cartridges the operator (or the library) must load for the rest.

Pure: it takes the job's studies, where their unconfirmed instances have readable copies
(``Journal.copies_to_read``) and the cartridges in the drives, and decides.

* **Every copy.** A study is ready when each of its instances has a copy on a loaded cartridge,
  whichever pool it belongs to (a study spanned over two cartridges, or held partly by each
  pool, is ready too). It is read from its *primary* cartridge, the loaded one holding most of
  it, and the rest from the others.
* **The rest waits.** A study with an instance on no loaded cartridge waits. One list names the
  cartridges that unlock every waiting study, chosen greedily (onsite before offsite, then the
  cartridge unlocking most), so two pools' copies of the same study never both appear; the
  cartridges unlocking the newest studies are to be loaded first.
* **Order.** First the recent studies (study date on or after ``recent_since``), then all others;
  within each pass studies are grouped by cartridge and read in position order, cartridges by
  their newest study. A cartridge holding recent and older studies is therefore passed over
  twice: once for the recent ones (positioned reads, skipping the rest), once for the others.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tapearc.catalog.journal import StudyRef
from tapearc.errors import UsageError

Priority = Literal["newest", "oldest"]
#: Sort key of a copy on its cartridge: file number first, then the offset in the archive.
_FILE_SPAN = 2 ** 40


@dataclass
class Plan:
    """What the run reads now, and what waits for which cartridges."""

    ready: list[StudyRef] = field(default_factory=list)
    #: study UID -> the cartridges of ``needs`` it waits for
    waiting: dict[str, list[str]] = field(default_factory=dict)
    #: the cartridges to load, in the order to load them: (barcode, pool, location)
    needs: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class _Study:
    """One study's unconfirmed instances: who holds each, and where on each cartridge."""

    holders: dict[str, frozenset[str]] = field(default_factory=dict)  # SOP UID -> barcodes
    first: dict[str, int] = field(default_factory=dict)  # barcode -> first position


def position(row: Mapping[str, Any]) -> int:
    """A copy's place on its cartridge, as one sortable number."""
    return int(row["data_file"]) * _FILE_SPAN + int(row["data_offset"])


def make_plan(studies: Sequence[StudyRef], copies: Iterable[Mapping[str, Any]],
              loaded: Collection[str], *, recent_since: str | None = None,
              priority: Priority = "newest") -> Plan:
    """Plan ``studies`` (their dates and expected counts) from ``copies`` (rows of
    ``Journal.copies_to_read``, grouped by study) with the cartridges in ``loaded``.

    A study of ``studies`` without any row in ``copies`` is in neither list: nothing of it is
    left to read (it is confirmed, or no copy of it is readable, which the reader reports).
    """
    wanted = {s.study_uid: s for s in studies}
    found: dict[str, _Study] = {}
    where: dict[str, tuple[str, str]] = {}  # barcode -> (pool, location)
    current: str | None = None
    sets: dict[str, set[str]] = {}
    for row in copies:
        uid = row["study_uid"]
        if uid not in wanted:
            continue
        if uid != current:
            _close(found, current, sets)
            current, sets = uid, {}
            found[uid] = _Study()
        barcode = row["barcode"]
        where[barcode] = (row["pool"], row["location"])
        sets.setdefault(row["sop_uid"], set()).add(barcode)
        pos = position(row)
        first = found[uid].first
        first[barcode] = min(first.get(barcode, pos), pos)
    _close(found, current, sets)

    plan = Plan()
    ready: list[StudyRef] = []
    stuck: dict[str, _Study] = {}
    for uid, study in found.items():
        primary = _primary(study, loaded)
        if primary is None:
            stuck[uid] = study
            continue
        ref = wanted[uid]
        ready.append(StudyRef(uid, ref.study_date, ref.expected_instances, primary,
                              study.first[primary]))
    plan.ready = order_studies(ready, priority, recent_since=recent_since)
    plan.needs, plan.waiting = _cover(stuck, loaded, where)
    # load first what unlocks the newest studies (the list itself stays as short as it is)
    newest: dict[str, str] = {}
    for uid, barcodes in plan.waiting.items():
        for b in barcodes:
            newest[b] = max(newest.get(b, ""), wanted[uid].study_date or "")
    plan.needs.sort(key=lambda need: newest.get(need[0], ""), reverse=True)
    return plan


def _close(found: dict[str, _Study], uid: str | None, sets: dict[str, set[str]]) -> None:
    if uid is not None:
        found[uid].holders = {sop: frozenset(b) for sop, b in sets.items()}


def _primary(study: _Study, loaded: Collection[str]) -> str | None:
    """The loaded cartridge holding most of the study, if loaded ones hold all of it."""
    held: Counter[str] = Counter()
    for holders in study.holders.values():
        here = [b for b in holders if b in loaded]
        if not here:
            return None
        held.update(here)
    return min(held, key=lambda b: (-held[b], b))


def _cover(stuck: Mapping[str, _Study], loaded: Collection[str],
           where: Mapping[str, tuple[str, str]]) -> tuple[list[tuple[str, str, str]],
                                                           dict[str, list[str]]]:
    """The cartridges that unlock every stuck study (greedy set cover) and, per study, which."""
    # each (study, holder set) must meet the list; identical sets are counted once per study
    open_sets: dict[tuple[str, frozenset[str]], None] = {}
    for uid, study in stuck.items():
        for holders in study.holders.values():
            if not holders & set(loaded):
                open_sets[(uid, holders)] = None
    chosen: list[str] = []
    while open_sets:
        score: Counter[str] = Counter(b for _, holders in open_sets for b in holders)
        # onsite first (a vault takes a day), then the one unlocking most, then pool order
        best = min(score, key=lambda b: (where[b][1] != "onsite", -score[b], where[b][0], b))
        chosen.append(best)
        open_sets = {k: None for k in open_sets if best not in k[1]}
    waiting: dict[str, list[str]] = {}
    for uid, study in stuck.items():
        # per instance the first cartridge of the list that holds it: one is enough
        need = {next(b for b in chosen if b in holders)
                for holders in study.holders.values() if not holders & set(loaded)}
        waiting[uid] = [b for b in chosen if b in need]
    return [(b, *where[b]) for b in chosen], waiting


def order_studies(studies: Sequence[StudyRef], priority: Priority = "newest", *,
                  recent_since: str | None = None) -> list[StudyRef]:
    """Reading order: the recent pass (study date >= ``recent_since``, YYYYMMDD) then the rest;
    in each, studies grouped by cartridge and in position order, cartridges by their newest
    study first (``priority="oldest"``: by their oldest study, oldest first)."""
    if priority not in ("newest", "oldest"):
        raise UsageError(f"unknown priority {priority!r}", hint="use newest or oldest")
    if recent_since is None:
        return _by_cartridge(studies, priority)
    recent = [s for s in studies if s.study_date and s.study_date >= recent_since]
    rest = [s for s in studies if not (s.study_date and s.study_date >= recent_since)]
    return _by_cartridge(recent, priority) + _by_cartridge(rest, priority)


def _by_cartridge(studies: Sequence[StudyRef], priority: Priority) -> list[StudyRef]:
    by_cart: dict[str, list[StudyRef]] = {}
    for s in studies:
        by_cart.setdefault(s.cartridge, []).append(s)
    dates = {c: [s.study_date for s in group if s.study_date] for c, group in by_cart.items()}

    def cart_key(cart: str) -> tuple[int, str, str]:
        known = dates[cart]
        if not known:
            return (1, "", cart)  # undated cartridges last
        if priority == "newest":
            # negate the date by complementing its digits so one ascending sort works
            best = max(known)
            return (0, "".join(chr(ord("9") - ord(ch) + ord("0")) for ch in best), cart)
        return (0, min(known), cart)

    ordered: list[StudyRef] = []
    for cart in sorted(by_cart, key=cart_key):
        ordered.extend(sorted(by_cart[cart], key=lambda s: (s.position, s.study_uid)))
    return ordered
