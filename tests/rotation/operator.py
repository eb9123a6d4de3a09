"""A rotation test site on two virtual tape drives and an operator who follows the plan."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tapearc.catalog import Catalog
from tapearc.config import Settings, load_settings
from tapearc.jobs import rotation as rotation_job
from tapearc.jobs.cartridge import eject_drive, label_cartridge, load_cartridge
from tapearc.jobs.media import loaded_drives
from tapearc.jobs.verify import verify_cartridge
from tapearc.rotation.plan import Plan
from tapearc.support import clock
from tests.jobs.site import Site, make_site

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # a Monday morning

ROTATION = """
[rotation]
max_onsite_days = {max_onsite}
exposure_limit_days = {limit}
transit_days = 2
ship_grace_days = 1
return_hold_days = 2
bring_back = ["recall", "verify"]
"""


def make_rotation_site(root: Path, *, verify: str = "none", capacity: str = "256 MiB",
                       max_onsite: int = 7, limit: int = 10) -> Site:
    """``tests.jobs.site`` plus a ``[rotation]`` table; the clock must already be set."""
    site = make_site(root, verify=verify, capacity=capacity)
    # a small drive buffer: the write path allocates all of it for every archive, and the
    # scenario writes hundreds of tiny ones
    text = site.config.read_text().replace("[archive]\n", "[archive]\nbuffer = \"1 MiB\"\n")
    site.config.write_text(text + ROTATION.format(max_onsite=max_onsite, limit=limit))
    site.settings = load_settings(site.config)
    return site


@dataclass
class Operator:
    """Does each morning what ``rotation plan`` says, like the person at the tape shelf."""

    site: Site
    counters: dict[str, itertools.count[int]] = field(default_factory=dict)
    shipped: list[str] = field(default_factory=list)
    received: list[str] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.site.settings

    def new_barcode(self, pool: str) -> str:
        counter = self.counters.setdefault(pool, itertools.count(1))
        return f"{pool}{next(counter):05d}"

    def plan(self, cat: Catalog) -> Plan:
        return rotation_job.build_plan(self.settings, cat, loaded_drives(self.settings))

    def receive_all(self, cat: Catalog) -> None:
        """Yesterday's box reached the vault; returns reached the site."""
        plan = self.plan(cat)
        codes = [i.barcode for i in plan.in_transit]
        result = rotation_job.receive(self.settings, cat, codes)
        assert not result.problems, result.problems
        self.received += codes

    def prepare(self, cat: Catalog) -> Plan:
        """Verify what the plan says must be verified, and eject what leaves today."""
        plan = self.plan(cat)
        for item in plan.ship:
            if item.blocked and "not verified" in item.blocked:
                self.in_drive(cat, item.barcode)
                report = verify_cartridge(self.settings, cat, item.barcode,
                                          identities=[self.site.identity])
                assert not report.failures, report.failures
        loaded = loaded_drives(self.settings)
        for item in plan.ship:
            if item.barcode in loaded:
                eject_drive(self.settings, loaded[item.barcode])
        return plan

    def ship_plan(self, cat: Catalog) -> None:
        """``tapearc rotation ship`` with no barcodes: today's plan."""
        moved = rotation_job.ship(self.settings, cat,
                                  loaded=loaded_drives(self.settings))
        self.shipped += [m.barcode for m in moved if m.dst.startswith("transit-to:")]

    def ship_today(self, cat: Catalog) -> Plan:
        plan = self.prepare(cat)
        self.ship_plan(cat)
        return plan

    def in_drive(self, cat: Catalog, barcode: str) -> None:
        """Put ``barcode`` in its pool's drive (swapping out whatever is there)."""
        if barcode in loaded_drives(self.settings):
            return
        pool = cat.cartridge(barcode)["pool"]
        load_cartridge(self.settings, cat, barcode, self.settings.pools[pool].drive)

    def ready_drives(self, cat: Catalog) -> None:
        """Each pool's drive holds an appendable onsite cartridge (a new one when none)."""
        for pool in sorted(self.settings.pools):
            writable = [c for c in rotation_job.cartridge_facts(cat)
                        if c.pool == pool and c.state == "appendable" and c.location.onsite
                        and c.returned_at is None]
            if writable:
                self.in_drive(cat, max(writable, key=lambda c: c.barcode).barcode)
            else:
                label_cartridge(self.settings, cat, self.new_barcode(pool), pool)

    def morning(self, cat: Catalog, *, ship: bool = True) -> Plan:
        self.receive_all(cat)
        plan = self.ship_today(cat) if ship else self.plan(cat)
        self.ready_drives(cat)
        return plan


def at(day: int, hour: int) -> datetime:
    """Day ``day`` of the scenario (0 = START's date) at ``hour`` UTC."""
    return START.replace(hour=hour) + timedelta(days=day)


def set_clock(day: int, hour: int) -> None:
    """Move the simulated clock to day ``day`` at ``hour``."""
    clock.set_now(at(day, hour))
