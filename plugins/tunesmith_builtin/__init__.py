"""Tunesmith's built-in plugins. Each module is one plugin, registered through the same hooks a
third-party package uses (see tunesmith.core.plugins.DEFAULT_PLUGINS)."""
