"""Tunesmith Python SDK."""
