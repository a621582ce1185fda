"""End-to-end scenarios run on the platform."""
