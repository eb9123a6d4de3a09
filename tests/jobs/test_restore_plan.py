"""The restore plan, pure: every loaded copy serves, the rest waits for one short list."""

from __future__ import annotations

from typing import Any

from tapearc.catalog.journal import StudyRef
from tapearc.jobs.restore_plan import make_plan, order_studies

POOL = {"A1": "A", "A2": "A", "B1": "B", "B2": "B"}
WHERE = {"A1": "onsite", "A2": "onsite", "B1": "onsite", "B2": "vault:south"}


def _rows(layout: dict[str, dict[str, list[tuple[str, int]]]]) -> list[dict[str, Any]]:
    """study -> sop -> [(barcode, offset)] as ``Journal.copies_to_read`` rows, by study."""
    rows = []
    for study in sorted(layout):
        for sop, copies in layout[study].items():
            for barcode, offset in copies:
                rows.append({"study_uid": study, "sop_uid": sop, "barcode": barcode,
                             "pool": POOL[barcode], "location": WHERE[barcode],
                             "data_file": 1, "data_offset": offset})
    return rows


def _refs(*specs: tuple[str, str | None]) -> list[StudyRef]:
    return [StudyRef(uid, day, 1, "", 0) for uid, day in specs]


def test_any_loaded_copy_serves_and_a_study_spread_over_pools_is_ready() -> None:
    layout = {
        "s1": {"i1": [("A1", 10), ("B1", 50)], "i2": [("A1", 20), ("B1", 60)]},
        "s2": {"i3": [("A2", 10), ("B1", 70)]},
        "s3": {"i4": [("A2", 30)], "i5": [("B1", 80)]},  # no pool holds all of it
    }
    plan = make_plan(_refs(("s1", None), ("s2", None), ("s3", None)), _rows(layout),
                     {"B1", "A2"})
    assert {r.study_uid: r.cartridge for r in plan.ready} == {"s1": "B1", "s2": "A2", "s3": "A2"}
    assert plan.needs == [] and plan.waiting == {}
    ready = {r.study_uid: r for r in plan.ready}
    assert ready["s1"].position == 2**40 + 50  # its first copy on the cartridge it is read from


def test_waiting_studies_get_one_short_list_onsite_first_newest_loaded_first() -> None:
    layout = {
        "old": {"i1": [("A1", 10), ("B2", 10)]},
        "new": {"i2": [("A2", 10), ("B2", 20)], "i3": [("A2", 20), ("B2", 30)]},
        "here": {"i4": [("B1", 10)]},
    }
    refs = _refs(("old", "20120101"), ("new", "20260101"), ("here", "20200101"))
    plan = make_plan(refs, _rows(layout), {"B1"})
    assert [r.study_uid for r in plan.ready] == ["here"]
    # B2 alone would unlock both waiting studies, but it is in a vault: the onsite A1 and A2
    # instead, the one with the newest study to be loaded first
    assert plan.needs == [("A2", "A", "onsite"), ("A1", "A", "onsite")]
    assert plan.waiting == {"old": ["A1"], "new": ["A2"]}

    only_b2 = {s: {i: [c for c in cs if c[0] == "B2"] for i, cs in v.items()}
               for s, v in layout.items() if s != "here"}
    plan = make_plan(refs, _rows(only_b2), {"B1"})
    assert plan.needs == [("B2", "B", "vault:south")]  # one cartridge, wherever it is
    assert plan.waiting == {"old": ["B2"], "new": ["B2"]}


def test_ties_prefer_onsite_then_pool_order() -> None:
    layout = {"s": {"i": [("B2", 5), ("B1", 5), ("A1", 5)]}}
    plan = make_plan(_refs(("s", None)), _rows(layout), set())
    assert plan.needs == [("A1", "A", "onsite")]


def test_recent_pass_first_then_the_rest_each_in_position_order() -> None:
    refs = [StudyRef("o1", "20100101", 1, "C1", 1), StudyRef("r1", "20250601", 1, "C1", 2),
            StudyRef("o2", "20110101", 1, "C1", 3), StudyRef("r2", "20250101", 1, "C2", 1),
            StudyRef("u", None, 1, "C1", 4)]
    order = [r.study_uid for r in order_studies(refs, recent_since="20240101")]
    assert order == ["r1", "r2", "o1", "o2", "u"]
    assert [r.study_uid for r in order_studies(refs)] == ["o1", "r1", "o2", "u", "r2"]
