"""The coordinator: job specs, manifests, approvals, chain authorizations, scheduling. Never holds raw data."""
