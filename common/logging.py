"""Logging is configured once, by the entry point, never on import."""

from __future__ import annotations

import logging

from rich.logging import RichHandler

_CONFIGURED = {"done": False}


def configure_logging(level: str = "INFO") -> None:
    """Install one rich handler on the root logger (idempotent)."""
    if _CONFIGURED["done"]:
        logging.getLogger().setLevel(level.upper())
        return
    logging.basicConfig(
        level=level.upper(),
        format="%(name)s: %(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(rich_tracebacks=False, show_path=False)],
    )
    # one line per HTTP request drowns the progress displays; keep the clients' warnings only
    for noisy in ("httpx", "httpcore", "urllib3", "web3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _CONFIGURED["done"] = True
