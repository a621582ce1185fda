"""The ``dcp`` command line.

Each subcommand lives in its own module under ``dcp.commands`` and exposes
``register(app)``; modules import their heavy dependencies (SecretFlow, web3 …)
inside the command bodies so that ``dcp --help`` stays fast.
"""

from __future__ import annotations

import importlib

import typer

from common.logging import configure_logging
from common.settings import DcpSettings

# Order is the order in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "dcp.commands.demo",
    "dcp.commands.sf",
    "dcp.commands.keys",
    "dcp.commands.chain",
    "dcp.commands.audit",
    "dcp.commands.node",
    "dcp.commands.job",
    "dcp.commands.federation",
)


def build_app() -> typer.Typer:
    """Assemble the CLI from the command modules that exist in this checkout."""
    app = typer.Typer(
        name="dcp",
        help="dcp: privacy-preserving data collaboration — usable but invisible, controllable and measurable.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _root(log_level: str = typer.Option(None, help="DEBUG, INFO, WARNING …")) -> None:
        settings = DcpSettings()
        configure_logging(log_level or settings.log_level)

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that command has not been built yet
                continue
            raise
        module.register(app)
    return app


def main() -> None:
    """Entry point of the ``dcp`` console script."""
    build_app()()
