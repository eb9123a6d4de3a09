"""The SQLite catalog: studies, instances, cartridges, archives, copies, runs and the audit log."""

from tapearc.catalog.db import (
    Catalog,
    NewInstance,
    StudyFilter,
    create_catalog,
    open_catalog,
    utcnow,
)

__all__ = ["Catalog", "NewInstance", "StudyFilter", "create_catalog", "open_catalog", "utcnow"]
