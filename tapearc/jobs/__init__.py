"""Jobs: the only composers of ingest, the archive format, drivers and the catalog.

One verb per module, each one function the CLI calls and tests call too; what several jobs
share about drives and cartridges is in ``tapearc.jobs.media``.
"""
