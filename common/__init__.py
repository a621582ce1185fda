"""Helpers every dcp package may import: ports, identifiers, settings sources, YAML files, logging.

This package imports nothing of the project's; the CLI (``dcp``) and every other package import it."""
