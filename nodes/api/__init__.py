"""Thin HTTP routes of the node; the logic lives in nodes.services."""
