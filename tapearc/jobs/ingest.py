"""The ingest job: scan the configured sources into the catalog, recorded as a run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tapearc.config import Settings
from tapearc.ingest.scan import IngestReport, ingest


def run_ingest(settings: Settings, paths: Sequence[Path] | None = None, *,
               show_progress: bool = False) -> IngestReport:
    """Ingest ``paths`` (default: the configured sources) and record the run in the catalog."""
    from tapearc.catalog import open_catalog
    from tapearc.errors import ConfigError

    roots = list(paths) if paths else settings.sources
    if not roots:
        raise ConfigError("no source folders to ingest",
                          hint="set ingest.sources in the config or pass PATHs")
    with open_catalog(settings.catalog_path) as catalog:
        run_id = catalog.start_run("ingest")
        try:
            if show_progress:
                report = _with_progress(catalog, roots, settings)
            else:
                report = ingest(catalog, roots, quiet_seconds=settings.quiet_seconds,
                                exclude=settings.exclude)
        except BaseException as exc:
            catalog.finish_run(run_id, "failed", getattr(exc, "exit_code", 1),
                               {"error": type(exc).__name__})
            raise
        # the run's record carries counts; paths (which may name patients) stay in the report
        catalog.finish_run(run_id, "ok", 0, {k: v for k, v in report.as_json().items()
                                             if k not in ("skipped", "opaque", "damaged")})
    return report


def _with_progress(catalog: object, roots: list[Path], settings: Settings) -> IngestReport:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TransferSpeedColumn

    from tapearc.catalog import Catalog

    assert isinstance(catalog, Catalog)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"),
                  TextColumn("{task.completed:.0f} bytes seen"), TransferSpeedColumn(),
                  transient=True) as bar:
        task = bar.add_task("scanning", total=None)
        return ingest(catalog, roots, quiet_seconds=settings.quiet_seconds,
                      exclude=settings.exclude, progress=lambda n: bar.advance(task, n))
