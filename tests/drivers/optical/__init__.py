"""Optical driver tests: real xorriso on stdio: pseudo-drives, parsers on recorded output."""
