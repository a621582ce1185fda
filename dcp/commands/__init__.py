"""One module per ``dcp`` subcommand; each exposes ``register(app: typer.Typer)``."""
