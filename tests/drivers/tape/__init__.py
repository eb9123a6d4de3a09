"""Tape driver tests: the layout on both devices, mt-st's parsers and the virtual drive."""
