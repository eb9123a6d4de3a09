"""Plumbing shared by every layer: process runner, clock, rate limits."""
