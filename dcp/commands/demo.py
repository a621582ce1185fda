"""``dcp demo``: the bank-credit scenario through a real local federation (what ``make demo`` runs).

``dcp demo`` generates the synthetic federation (six departments, three banks), starts anvil, the
contracts, the coordinator and one node per member, ingests each member's data into its own node,
submits the pre-loan training job as the bank, shows the departments' approval step, runs PSI and
SS-LR in real SecretFlow party processes, prints the credit-risk report and the regulator's audit,
and stops everything (see :mod:`scenarios.bank_credit.demo`).

``dcp demo-engine`` is the smaller foundation demo: three parties' synthetic data and one
SecretFlow job run directly by the runner, without the federation around it.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``demo`` and ``demo-engine`` commands."""

    @app.command("demo")
    def demo(
        n: int = typer.Option(20_000, "--n", min=500, help="enterprises to generate"),
        seed: int = typer.Option(7, help="seed of the synthetic federation"),
        out: Path = typer.Option(None, help="output directory (default var/bank_credit_demo)"),
        auto_approve: bool = typer.Option(
            None, "--auto-approve/--ask", help="approve every request automatically / ask for every decision"
        ),
    ) -> None:
        """The bank-credit demo: federation up, ingest, approvals, chain, PSI + SS-LR, report, audit, down."""
        from scenarios.bank_credit.demo import main as demo_main

        argv = ["--n", str(n), "--seed", str(seed)]
        if out is not None:
            argv += ["--out", str(out)]
        if auto_approve is not None:
            argv.append("--auto-approve" if auto_approve else "--ask")
        raise typer.Exit(demo_main(argv))

    @app.command("demo-engine")
    def demo_engine(
        rows: int = typer.Option(10_000, min=100, help="rows per party"),
        overlap: float = typer.Option(
            0.6, min=0.01, max=1.0, help="fraction of rows all three parties share"
        ),
        seed: int = typer.Option(7, help="seed of the synthetic data"),
        psi: str = typer.Option("RR22", help="PSI protocol: RR22, ECDH, ECDH_SM2 (国密) or ECDH_3PC"),
        epochs: int = typer.Option(5, min=1, help="SS-LR epochs"),
        out: Path = typer.Option(None, help="where data and outputs go (default: var/demo)"),
    ) -> None:
        """Generate three parties' data, run PSI + SS-LR in real SecretFlow processes, report."""
        from rich.console import Console
        from rich.table import Table

        from common.settings import DcpSettings
        from dcp.commands.sf import result_table, run_with_progress
        from protocols.secretflow.errors import DcpRunError
        from protocols.secretflow.spec import PSI_PROTOCOLS, ModelParams
        from protocols.secretflow.synthetic import make_vertical_data, plaintext_reference

        console = Console()
        if psi not in PSI_PROTOCOLS:
            console.print(
                f"[red]error:[/red] unknown PSI protocol {psi!r}; choose one of {', '.join(PSI_PROTOCOLS)}"
            )
            raise typer.Exit(2)
        root = (out or DcpSettings().work_dir / "demo").resolve()
        console.rule("[bold]dcp demo — vertical SS-LR across a bank and two departments")
        data = make_vertical_data(root / "data", n_rows=rows, overlap=overlap, seed=seed)
        console.print(
            f"generated {len(data.parties)} parties × {rows} rows into {root / 'data'} "
            f"(seed {seed}; {data.true_intersection} enterprises held by all three)"
        )
        spec = data.job_spec(
            root / "out", psi_protocol=psi, model=ModelParams(epochs=epochs), work_dir=root / "work"
        )
        try:
            result = run_with_progress(spec, console)
        except DcpRunError as exc:
            console.print(f"[red]run failed ({type(exc).__name__}):[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
        reference = plaintext_reference(spec)
        console.print(result_table(result))

        summary = Table(title="what the run achieved", show_header=False)
        summary.add_column(style="bold")
        summary.add_column()
        ok = "[green]✓[/green]" if result.intersection_rows == data.true_intersection else "[red]✗[/red]"
        summary.add_row(
            "intersection", f"{result.intersection_rows} rows (true overlap {data.true_intersection}) {ok}"
        )
        summary.add_row("SS-LR AUC (secret-shared)", f"{result.metrics.auc:.4f}")
        summary.add_row("plaintext LR AUC (sklearn)", f"{reference.auc:.4f}")
        summary.add_row("gap to plaintext", f"{result.metrics.auc - reference.auc:+.4f}")
        s = result.stages
        summary.add_row("stage times", f"psi {s.psi:.2f}s · train {s.train:.2f}s · predict {s.predict:.2f}s")
        summary.add_row("wall clock", f"{result.elapsed_s:.1f}s (3 processes, incl. start-up)")
        summary.add_row(
            "outputs", str(root / "out") + "  (each party: own directory; predictions at bank only)"
        )
        console.print(summary)
