"""Reproductions of bugs an adversarial review of the data path found, kept as regression tests.

Each module's docstring describes the failure as it was; the assertions state the fixed behaviour.
"""
