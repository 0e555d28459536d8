"""Shared pieces every service uses."""
