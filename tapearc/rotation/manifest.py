"""The printable courier manifest: per vault, the barcodes going out and coming back, with
counts and signature lines. Barcodes, pools and vaults only: no patient data."""

from __future__ import annotations

import html

from tapearc.rotation.plan import Plan
from tapearc.rotation.policy import plural


def manifest_html(plan: Plan, site: str) -> str:
    """A printable courier manifest: per vault, the barcodes going out and coming back, with
    counts and signature lines. Barcodes, pools and vaults only: no patient data."""
    vaults = sorted({i.vault or "?" for i in (*plan.ship, *plan.bring_back)})
    esc = html.escape
    parts = [
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
        f"<title>Courier manifest {esc(site)} {plan.now:%Y-%m-%d}</title>",
        "<style>body{font-family:sans-serif}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #000;padding:4px 10px}.sig{margin-top:3em}</style>",
        "</head><body>",
        f"<h1>Courier manifest</h1><p>Site: {esc(site)}<br>Date: {plan.now:%Y-%m-%d}</p>",
    ]
    if not vaults:
        parts.append("<p>Nothing to carry today.</p>")
    for vault in vaults:
        out = [i for i in plan.ship if (i.vault or "?") == vault and not i.blocked]
        back = [i for i in plan.bring_back if (i.vault or "?") == vault]
        parts.append(f"<h2>Vault {esc(vault)}</h2>")
        for title, items in ((f"To vault {vault}", out), (f"Back from vault {vault}", back)):
            parts.append(f"<h3>{esc(title)}: {plural(len(items), 'cartridge')}</h3>")
            if items:
                parts.append("<table><tr><th>#</th><th>Barcode</th><th>Pool</th>"
                             "<th>Checked</th></tr>")
                parts += [f"<tr><td>{n}</td><td>{esc(i.barcode)}</td><td>{esc(i.pool)}</td>"
                          "<td>&#9744;</td></tr>" for n, i in enumerate(items, 1)]
                parts.append("</table>")
        parts.append("<p class='sig'>Handed over by: ______________________ "
                     "Received by: ______________________ Time: __________</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
