"""Offsite rotation: the pure policy, the plan and the courier manifest."""
