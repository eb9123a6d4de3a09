"""tapearc: encrypted tape, optical and disk archives of a hospital PACS."""

__version__ = "0.1.0"
