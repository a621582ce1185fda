"""Node services: the logic behind the thin API routes."""
