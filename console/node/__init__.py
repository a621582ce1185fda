"""A node's console (skeleton): a department officer's inbox over the node's approvals service.

Logins are not here: every page takes the officer from the ``officer`` dependency the factory is
given (:data:`console.node.deps.officer_login_required` until the officers work provides one).
"""

from console.node.app import create_node_console
from console.node.deps import ConsoleOfficer, officer_login_required

__all__ = ["ConsoleOfficer", "create_node_console", "officer_login_required"]
