"""``python -m tapearc``."""

from tapearc.cli import main

main()
