"""Fixtures (placeholder until filled by its area)."""
