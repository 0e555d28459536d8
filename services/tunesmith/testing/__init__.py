"""Test helpers for Tunesmith and for third-party plugin packages.

`tunesmith.testing.contracts` runs a plugin through the checks every plugin of its kind must
pass (the contracts in tunesmith.core.contracts). Needs pytest (and torch, transformers, peft
for the checks that build a model); importing this package imports none of them.
"""
