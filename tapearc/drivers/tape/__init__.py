"""Tape: the archive layout over the st driver's semantics, and the devices that have them.

Modules: ``device`` (the ``TapeDevice`` interface: what a program sees through ``/dev/nstN``
plus mt-st), ``st`` (the real drive: the st device and mt-st), ``vdevice`` (a file-backed virtual
drive with the same semantics), ``driver`` (the tape layout; ``driver = "tape"``), ``vtape``
(the layout over the virtual drive; ``driver = "vtape"``).
"""

from tapearc.drivers.tape.driver import TapeDriver
from tapearc.drivers.tape.vtape import VirtualTapeDriver

__all__ = ["TapeDriver", "VirtualTapeDriver"]
