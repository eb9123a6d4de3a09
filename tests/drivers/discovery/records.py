"""Read a umockdev device file into ``DeviceRecord`` objects, as the pyudev adapter would see it."""

from __future__ import annotations

from pathlib import Path

from tapearc.drivers.discovery import DeviceRecord

UMOCKDEV = Path(__file__).parents[2] / "fixtures" / "udev" / "devices.umockdev"


def parse_umockdev(text: str) -> list[DeviceRecord]:
    """``P:`` starts a device; ``E:`` properties, ``A:`` attributes, ``N:`` node, ``L: device=``
    names the SCSI parent (resolved against the other devices' ``P:`` paths)."""
    devices: list[dict[str, object]] = []
    for block in text.split("\n\n"):
        dev: dict[str, object] = {"E": {}, "A": {}, "N": None, "L": None, "P": None}
        for line in block.strip().splitlines():
            tag, _, rest = line.partition(": ")
            if tag == "P":
                dev["P"] = rest
            elif tag == "N":
                dev["N"] = "/dev/" + rest
            elif tag in ("E", "A"):
                key, _, value = rest.partition("=")
                dev[tag][key] = value  # type: ignore[index]
            elif tag == "L" and rest.startswith("device="):
                dev["L"] = rest.removeprefix("device=")
        if dev["P"]:
            devices.append(dev)
    by_path = {str(d["P"]): d for d in devices}
    records = []
    for d in devices:
        props: dict[str, str] = d["E"]  # type: ignore[assignment]
        if not d["N"]:
            continue
        parent_attrs: dict[str, str] = {}
        if d["L"]:
            parent_path = str(Path(str(d["P"]), str(d["L"])).resolve())  # ../../../1:0:0:0
            parent = by_path.get(parent_path)
            if parent is not None:
                parent_attrs = {k: v.strip() for k, v in parent["A"].items()  # type: ignore[attr-defined]
                                if k in ("type", "vendor", "model", "rev")}
        records.append(DeviceRecord(subsystem=props.get("SUBSYSTEM", ""),
                                    sys_name=str(d["P"]).rsplit("/", 1)[-1],
                                    device_node=str(d["N"]), properties=props,
                                    parent_attributes=parent_attrs))
    return records
