"""PACS storage to catalogued instances."""
