"""A node's console: the department officers', data stewards' and auditors' pages over the node's
own services (inbox, four-eyes changes, datasets, policy, audit log, receipts).

The node serves it on a listener of its own, over TLS, to officers signed in with password + TOTP
(:mod:`console.node.listener`, :mod:`console.node.auth`); :func:`create_node_console` takes any
``officer`` dependency instead (the default refuses with 501).
"""

from console.node.app import create_node_console, create_officer_console
from console.node.deps import ConsoleOfficer, officer_login_required

__all__ = ["ConsoleOfficer", "create_node_console", "create_officer_console", "officer_login_required"]
