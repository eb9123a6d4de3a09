"""``tapearc status``: the operator's one screen, composed from the catalog, the drives and
today's rotation plan."""

from __future__ import annotations

import json
from typing import Any

from tapearc.catalog.db import Catalog
from tapearc.config import Settings
from tapearc.errors import ConfigError
from tapearc.jobs.availability import current_reach
from tapearc.jobs.media import drive_table, network_pools
from tapearc.jobs.requests import fetch_lines
from tapearc.jobs.rotation import build_plan
from tapearc.jobs.stream import queue_of
from tapearc.rotation import policy as rotation
from tapearc.rotation.plan import Plan
from tapearc.rotation.policy import parse_location
from tapearc.support import clock


def status_report(settings: Settings, catalog: Catalog) -> dict[str, Any]:
    """Everything the operator's one screen shows (``tapearc status --json``)."""
    drives = drive_table(settings)
    loaded = {r["loaded"]: r["drive"] for r in drives if r["loaded"]}
    pending_ids: dict[int, tuple[str, int]] = {}
    for pool in settings.pools:
        for r in catalog.pending_instances(pool):
            pending_ids[r["id"]] = (r["study_uid"], r["size"])
    by_location: dict[str, dict[str, int]] = {}
    for cart in catalog.cartridges():
        loc = parse_location(cart["location"], strict=False)
        where = "vault:" + str(loc.place) if loc.kind == rotation.VAULT else loc.kind
        pool_counts = by_location.setdefault(cart["pool"], {})
        pool_counts[where] = pool_counts.get(where, 0) + 1
    last = catalog.last_run("nightly")
    nightly = None
    if last is not None:
        summary = json.loads(last["summary"]) if last["summary"] else {}
        nightly = {"started": last["started"], "finished": last["finished"],
                   "result": last["result"], "exit_code": last["exit_code"],
                   "needs": summary.get("needs", [])}
    try:
        plan: Plan | None = build_plan(settings, catalog, loaded)
        problem = None
    except ConfigError as exc:
        plan, problem = None, str(exc)
    expo = plan.exposure if plan else None
    today = plan.todo[:] if plan else [f"fix the configuration: {problem}"]
    if plan:
        today = [f"ship {i.barcode} (pool {i.pool}) to vault {i.vault}: {i.reason}"
                 + (f" ({i.prepare} first)" if i.prepare else "")
                 for i in plan.ship if not i.blocked] + \
                [f"bring back {i.barcode} from vault {i.vault}: {i.reason}"
                 for i in plan.bring_back if not i.blocked] + today
    today += fetch_lines(catalog, current_reach(settings, catalog, loaded))
    if nightly and nightly["result"] != "ok":
        today += [f"last nightly: {n}" for n in nightly["needs"]]
    network = [queue_of(catalog, pool).as_json() for pool in network_pools(settings)]
    limit = settings.stream.max_age_minutes if settings.stream else None
    for queue in network:
        queue["limit_minutes"] = limit
        if limit is not None and queue["exposure_minutes"] > 2 * limit:
            today.append(f"pool {queue['pool']}: {queue['instances']} instances have waited "
                         f"{queue['exposure_minutes']:.0f} min to go offsite (limit {limit:g}): "
                         "is tapearc stream running, is the link up?")
    return {
        "now": clock.now().isoformat(),
        "network": network,
        "pending": {"studies": len({s for s, _ in pending_ids.values()}),
                    "instances": len(pending_ids),
                    "bytes": sum(n for _, n in pending_ids.values())},
        "exposure": expo.as_json() if expo else None,
        "last_nightly": nightly,
        "cartridges": by_location,
        "drives": drives,
        "overdue": [i.as_json() for i in plan.overdue] if plan else [],
        "today": today,
    }
