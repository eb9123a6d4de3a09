"""The pure parts of rotation: locations, transitions, policy, invariants, plan, exposure."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from tapearc.errors import ConfigError, UsageError
from tapearc.rotation.manifest import manifest_html
from tapearc.rotation.plan import make_plan
from tapearc.rotation.policy import (
    CartridgeFacts,
    Exposure,
    Location,
    Request,
    Rotation,
    exposure,
    make_policy,
    move_problems,
    parse_location,
    transition_allowed,
    writable_location,
)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
VAULTS = {"A": "north", "B": "south"}
POLICY = make_policy(Rotation(max_onsite_days=7, exposure_limit_days=10, transit_days=2), VAULTS)
NO_EXPOSURE = Exposure(0, 0, None, 0.0, 10.0)


def days(n: float) -> timedelta:
    return timedelta(days=n)


def cart(barcode: str = "A00001", pool: str = "A", *, state: str = "appendable",
         location: str = "onsite", since: float = 10, **kw: object) -> CartridgeFacts:
    """A cartridge that has been at ``location`` for ``since`` days, with one verified archive."""
    fields: dict[str, object] = {"archives": 1, "unverified": 0}
    fields.update(kw)
    return CartridgeFacts(barcode, pool, state, parse_location(location), NOW - days(since),
                          **fields)  # type: ignore[arg-type]


# --- locations ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, kind, place", [
    ("onsite", "onsite", None), ("drive:da", "drive", "da"), ("drive", "drive", None),
    ("transit-to:north", "transit-to", "north"), ("vault:north", "vault", "north"),
    ("transit-back:vault-B", "transit-back", "vault-B"), ("retired", "retired", None),
    ("destroyed", "destroyed", None), ("lost", "lost", None), (" Vault:north ", "vault", "north"),
])
def test_parse_location_round_trips(text: str, kind: str, place: str | None) -> None:
    loc = parse_location(text)
    assert (loc.kind, loc.place) == (kind, place)
    assert parse_location(str(loc)) == loc


@pytest.mark.parametrize("bad", ["", "vault", "vault:", "moon", "onsite:x", "vault:a b",
                                 "vault:../x", "transit-to:" + "x" * 65, "lost:north"])
def test_bad_locations_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_location(bad)
    assert err.value.exit_code == 2 and "vault:VAULT" in str(err.value)
    assert parse_location(bad, strict=False).kind in ("unknown",)


def test_onsite_and_offsite_kinds() -> None:
    assert parse_location("drive:da").onsite and not parse_location("drive:da").offsite
    for text in ("transit-to:n", "vault:n", "transit-back:n"):
        loc = parse_location(text)
        assert loc.offsite and not loc.onsite and loc.vault == "n"
    for text in ("retired", "destroyed", "lost"):
        loc = parse_location(text)
        assert not loc.onsite and not loc.offsite


def test_a_cartridge_offsite_is_never_writable() -> None:
    assert writable_location("onsite", "da")
    assert writable_location("drive", "da") and writable_location("drive:da", "da")
    assert not writable_location("drive:db", "da")
    for where in ("transit-to:north", "vault:north", "transit-back:north", "lost", "retired",
                  "destroyed", "vault-south", ""):
        assert not writable_location(where, "da"), where


def L(text: str) -> Location:
    return parse_location(text)


@pytest.mark.parametrize("src, dst", [
    ("onsite", "transit-to:north"), ("onsite", "drive:da"), ("drive:da", "onsite"),
    ("transit-to:north", "vault:north"), ("vault:north", "transit-back:north"),
    ("transit-back:north", "onsite"), ("vault:north", "transit-to:east"), ("onsite", "retired"),
    ("retired", "destroyed"), ("vault:north", "destroyed"), ("onsite", "lost"),
    ("lost", "onsite"), ("lost", "vault:north"), ("transit-to:north", "onsite"),
])
def test_allowed_moves(src: str, dst: str) -> None:
    assert transition_allowed(L(src), L(dst))


@pytest.mark.parametrize("src, dst", [
    ("onsite", "vault:north"), ("onsite", "transit-back:north"), ("drive:da", "transit-to:n"),
    ("transit-to:north", "vault:south"), ("vault:north", "onsite"),
    ("vault:north", "transit-back:south"), ("vault:north", "transit-to:north"),
    ("destroyed", "onsite"), ("destroyed", "vault:north"), ("retired", "transit-to:north"),
    ("onsite", "onsite"), ("onsite", "destroyed"),
])
def test_refused_moves(src: str, dst: str) -> None:
    assert not transition_allowed(L(src), L(dst))


# --- policy ---------------------------------------------------------------------------------


def test_policy_defaults_and_values() -> None:
    p = make_policy(Rotation(), VAULTS)
    assert p.max_onsite_days == 7 and p.exposure_limit_days == 14 and p.ship_after_verify
    assert p.bring_back == {"recall", "verify"} and p.vaults == VAULTS


@pytest.mark.parametrize("rules, key", [
    ({"max_onsite_days": 0}, "max_onsite_days"),
    ({"exposure_limit_days": 8}, "exposure_limit_days"),
])
def test_rules_that_could_never_be_met_are_refused(rules: dict[str, float], key: str) -> None:
    # the message starts with the key, so the config schema names it (tests/test_config.py)
    with pytest.raises(ValueError, match=f"^{key} "):
        Rotation(**rules)


def test_two_pools_in_one_vault_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"pools\.A\.vault and pools\.B\.vault are both 'north'"):
        make_policy(Rotation(), {"A": "north", "B": "north"})
    with pytest.raises(ConfigError, match=r"pools\.A\.vault"):
        make_policy(Rotation(), {"A": "no rth"})


# --- invariants -----------------------------------------------------------------------------


def test_a_copy_leaves_only_after_it_was_verified() -> None:
    unverified = cart(unverified=2)
    problems = move_problems(unverified, L("transit-to:north"), POLICY)
    assert problems == ["A00001 has 2 archives not verified ok: verify it before it leaves "
                        "(tapearc verify A00001)"]
    assert move_problems(cart(), L("transit-to:north"), POLICY) == []
    lax = msgspec.structs.replace(POLICY, ship_after_verify=False)
    assert move_problems(unverified, L("transit-to:north"), lax) == []
    # moving within the building needs no verification
    assert move_problems(unverified, L("drive:da"), POLICY) == []


def test_never_two_copies_in_one_vault() -> None:
    problems = move_problems(cart("B00001", "B"), L("transit-to:north"), POLICY,
                             clash_studies=3)
    assert len(problems) == 1 and "3 studies" in problems[0] and "one place" in problems[0]
    arriving = cart("B00001", "B", location="transit-to:north")
    assert move_problems(arriving, L("vault:north"), POLICY, clash_studies=1)


def test_never_all_copies_back_at_once() -> None:
    away = cart(location="vault:north")
    assert "no copy left offsite" in move_problems(away, L("transit-back:north"), POLICY,
                                                   orphan_studies=5)[0]
    assert move_problems(away, L("transit-back:north"), POLICY) == []


def test_other_rules() -> None:
    assert "eject it first" in move_problems(cart(location="drive:da"), L("transit-to:north"),
                                             POLICY)[0]
    assert "loaded in drive da" in move_problems(cart(drive="da"), L("transit-to:north"),
                                                 POLICY)[0]
    assert "retire it first" in move_problems(cart(location="vault:north"), L("destroyed"),
                                              POLICY)[0]
    assert move_problems(cart(state="retired", location="retired"), L("destroyed"), POLICY) == []
    assert "only appendable or full" in move_problems(cart(state="suspect"),
                                                      L("transit-to:north"), POLICY)[0]
    assert move_problems(cart(), L("onsite"), POLICY) == ["A00001 is already at onsite"]


# --- exposure -------------------------------------------------------------------------------


def test_exposure_is_the_oldest_unsafe_study_and_its_bytes() -> None:
    rows: list[dict[str, object]] = [{"since": (NOW - days(3)).isoformat(), "bytes": 100},
            {"since": NOW - days(8.5), "bytes": 50}, {"since": None, "bytes": None}]
    expo = exposure(rows, NOW, 10)
    assert (expo.studies, expo.bytes, round(expo.days, 2), expo.over) == (3, 150, 8.5, False)
    assert exposure(rows, NOW + days(2), 10).over
    none = exposure([], NOW, 10)
    assert none.days == 0 and not none.over and "none" in none.line()
    assert expo.as_json()["oldest_since"] == (NOW - days(8.5)).isoformat()


# --- the plan -------------------------------------------------------------------------------


def test_full_cartridges_ship_at_once_and_appendable_ones_after_the_limit() -> None:
    carts = [
        cart("A00001", state="full", closed_at=NOW - days(0.2), new_data_since=NOW - days(3)),
        cart("A00002", new_data_since=NOW - days(7.1)),
        cart("B00001", "B", new_data_since=NOW - days(6.9)),
        cart("B00002", "B", archives=0),
    ]
    plan = make_plan(carts, [], POLICY, NOW, NO_EXPOSURE)
    assert [(i.barcode, i.vault, i.overdue) for i in plan.ship] == [
        ("A00001", "north", False), ("A00002", "north", False)]
    assert plan.ship[0].reason == "full" and "not offsite since" in plan.ship[1].reason
    # pool A has nothing left to write on once both leave; pool B still has B00001 and B00002
    assert any(t.startswith("pool A: no appendable cartridge onsite once A00001, A00002 ships")
               for t in plan.todo)
    assert not any(t.startswith("pool B") for t in plan.todo)


def test_a_skipped_shipment_becomes_overdue() -> None:
    carts = [cart("A00001", new_data_since=NOW - days(7.5))]
    assert not make_plan(carts, [], POLICY, NOW, NO_EXPOSURE).overdue
    later = make_plan(carts, [], POLICY, NOW + days(1), NO_EXPOSURE)
    assert [(i.action, i.barcode) for i in later.overdue] == [("ship", "A00001")]
    assert any(t.startswith("OVERDUE ship A00001") for t in later.todo)
    assert later.as_json()["overdue"][0]["barcode"] == "A00001"


def test_blocked_shipments_say_why() -> None:
    carts = [cart("A00001", state="full", unverified=1, drive="da")]
    plan = make_plan(carts, [], POLICY, NOW, NO_EXPOSURE)
    [item] = plan.ship
    assert item.blocked == ("A00001 has 1 archive not verified ok: verify it before it leaves "
                            "(tapearc verify A00001)")
    assert item.prepare == "eject it from drive da"
    assert "A00001: eject it from drive da before it ships" in plan.todo
    assert "A00001" not in manifest_html(plan, "s")
    # once verified, only the eject is left: it goes on the courier's list
    plan = make_plan([replace(carts[0], unverified=0)], [], POLICY, NOW, NO_EXPOSURE)
    assert not plan.ship[0].blocked and "A00001" in manifest_html(plan, "s")


def test_transit_that_takes_too_long_is_overdue() -> None:
    carts = [cart("A00001", location="transit-to:north", since=1),
             cart("B00001", "B", location="transit-back:south", since=3)]
    plan = make_plan(carts, [], POLICY, NOW, NO_EXPOSURE)
    assert [(i.barcode, i.overdue) for i in plan.in_transit] == [("A00001", False),
                                                                 ("B00001", True)]


def test_recall_requests_and_returns() -> None:
    requested = Request("A00001", "recall", NOW - days(0.5))
    in_vault = cart("A00001", state="full", location="vault:north")
    plan = make_plan([in_vault], [requested], POLICY, NOW, NO_EXPOSURE)
    assert [(i.barcode, i.vault) for i in plan.bring_back] == [("A00001", "north")]
    assert make_plan([in_vault], [requested], POLICY, NOW + days(4), NO_EXPOSURE).overdue
    no_returns = msgspec.structs.replace(POLICY, bring_back=frozenset())
    assert not make_plan([in_vault], [requested], no_returns, NOW, NO_EXPOSURE).bring_back
    # back onsite: it stays for return_hold_days, then the plan sends it back
    back = cart("A00001", state="full", returned_at=NOW - days(1), closed_at=NOW - days(40))
    assert make_plan([back], [], POLICY, NOW, NO_EXPOSURE).ship == []
    [item] = make_plan([back], [], POLICY, NOW + days(1.5), NO_EXPOSURE).ship
    assert "return it" in item.reason and item.vault == "north"


def test_drills_take_one_cartridge_at_a_time() -> None:
    policy = msgspec.structs.replace(POLICY, verify_drill_days=90)
    old_a = cart("A00001", location="vault:north", last_verified=NOW - days(100))
    old_b = cart("B00001", "B", location="vault:south", last_verified=NOW - days(120))
    fresh = cart("A00002", location="vault:north", last_verified=NOW - days(10))
    plan = make_plan([old_a, old_b, fresh], [], policy, NOW, NO_EXPOSURE)
    assert [i.barcode for i in plan.bring_back] == ["B00001"]
    assert "drill" in plan.bring_back[0].reason
    away = cart("A00003", location="transit-back:north")
    assert not make_plan([old_a, old_b, away], [], policy, NOW, NO_EXPOSURE).bring_back
    assert not make_plan([old_a, old_b], [], POLICY, NOW, NO_EXPOSURE).bring_back  # drills off


def test_append_rule_brings_back_the_emptiest_appendable() -> None:
    policy = msgspec.structs.replace(POLICY, bring_back=frozenset({"append"}))
    carts = [cart("A00001", location="vault:north", free_bytes=10),
             cart("A00002", location="vault:north", free_bytes=500),
             cart("A00003", state="full", location="vault:north", free_bytes=900),
             cart("B00001", "B", new_data_since=NOW - days(1))]
    plan = make_plan(carts, [], policy, NOW, NO_EXPOSURE)
    assert [i.barcode for i in plan.bring_back] == ["A00002"]
    assert not any(t.startswith("pool A") for t in plan.todo)


def test_manifest_has_barcodes_and_counts_only() -> None:
    carts = [cart("A00001", state="full", closed_at=NOW - days(1)),
             cart("B00001", "B", state="full", closed_at=NOW - days(1)),
             cart("B00009", "B", state="full", closed_at=NOW - days(1), unverified=1),
             cart("A00007", location="vault:north")]
    plan = make_plan(carts, [Request("A00007", "recall", NOW)], POLICY, NOW, NO_EXPOSURE)
    page = manifest_html(plan, "<site>")
    assert page.startswith("<!DOCTYPE html>") and "&lt;site&gt;" in page
    assert "To vault north: 1 cartridge<" in page and "Back from vault north: 1 cartridge<" in page
    assert "To vault south: 1 cartridge<" in page
    assert "A00001" in page and "B00001" in page and "A00007" in page
    assert "B00009" not in page  # blocked: not verified, it does not go in the box
    assert "Nothing to carry" in manifest_html(make_plan([], [], POLICY, NOW, NO_EXPOSURE), "s")


def test_every_place_is_reachable_and_destroyed_is_final() -> None:
    places = [L(t) for t in ("onsite", "drive:da", "transit-to:north", "vault:north",
                             "transit-back:north", "transit-to:south", "vault:south",
                             "transit-back:south", "retired", "destroyed", "lost")]
    reached = {L("onsite")}
    frontier = [L("onsite")]
    while frontier:
        here = frontier.pop()
        for there in places:
            if there not in reached and transition_allowed(here, there):
                reached.add(there)
                frontier.append(there)
    assert reached == set(places)
    assert not any(transition_allowed(L("destroyed"), p) for p in places)
    # a vault is reached only through transit to that same vault
    assert {p for p in places if transition_allowed(p, L("vault:north"))} == {
        L("transit-to:north"), L("transit-back:north"), L("lost")}
