"""Jobs: ingest, write, nightly, recall, verify, catalog backup/rebuild.

A job composes ingest, the archive format, drivers and the catalog; each is one function the
CLI calls and tests call too.
"""
