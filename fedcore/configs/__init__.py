"""Packaged TOML configs: ``default.toml`` is what ``fedcore run`` runs without an argument."""
