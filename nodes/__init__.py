"""Department and bank nodes: each member's own trust boundary (data, catalog, policy, approvals, audit log)."""
