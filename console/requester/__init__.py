"""The requester's console (a bank's node): catalog, job form, live progress, job list, report."""

from console.requester.app import create_requester_console
from console.requester.desk import RequesterDesk

__all__ = ["RequesterDesk", "create_requester_console"]
