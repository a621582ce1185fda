"""``dcp sf``: run SecretFlow vertical jobs (PSI → SS-LR / SS-XGB / SGB → joint prediction) from a spec file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from protocols.secretflow.spec import RunResult, VerticalJobSpec

STAGES = ("validate", "connect", "psi", "train", "model", "load", "predict")

EXAMPLE_SPEC = """\
# dcp sf run job.yaml — paths are relative to this file
join_key: uscc
label_party: bank
label_column: default
psi_protocol: RR22        # RR22 | ECDH | ECDH_SM2 (国密) | ECDH_3PC (exactly 3 parties)
stages: [psi, train, predict]   # [psi] = intersection only; [psi, predict] = score with stored model parts
# algorithm: ss_lr | ss_xgb {num_boost_round, max_depth, learning_rate, ...} | sgb (HEU SecureBoost)
# test_fraction: hold out rows by a hash of the join key (salt: split_salt); metrics on train and test
model: {algorithm: ss_lr, epochs: 5, learning_rate: 0.3, batch_size: 1024, test_fraction: 0.3}
timeout_s: 600
parties:   # each party's model part goes to model_dir (default: <output_dir>/model)
  - {name: bank,  input_csv: data/bank.csv,  output_dir: out/bank}
  - {name: tax,   input_csv: data/tax.csv,   output_dir: out/tax}
  - {name: power, input_csv: data/power.csv, output_dir: out/power}
"""


class SpecFileError(Exception):
    """The spec file cannot be read or is not a valid job spec."""


def load_spec(path: Path) -> VerticalJobSpec:
    """Read a YAML (or JSON) job spec; relative paths are taken relative to the file."""
    import yaml
    from pydantic import ValidationError

    from protocols.secretflow.spec import VerticalJobSpec

    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecFileError(f"cannot read spec {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise SpecFileError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecFileError(f"{path}: expected a mapping at the top level")
    base = path.resolve().parent

    def rel(v: Any) -> Any:
        return str(base / v) if isinstance(v, str) and not Path(v).is_absolute() else v

    for p in raw.get("parties") or []:
        if isinstance(p, dict):
            for k in ("input_csv", "output_dir", "model_dir"):
                if k in p:
                    p[k] = rel(p[k])
    if raw.get("work_dir"):
        raw["work_dir"] = rel(raw["work_dir"])
    try:
        return VerticalJobSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecFileError(f"{path} is not a valid job spec:\n{exc}") from exc


def run_with_progress(spec: VerticalJobSpec, console: Console) -> RunResult:
    """Run ``spec`` with one live progress bar per party."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from protocols.secretflow.runner import run_vertical_job

    with Progress(
        TextColumn("[bold]{task.fields[party]:>8}"),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        tasks = {
            p.name: progress.add_task("starting", total=len(STAGES), party=p.name)
            for p in sorted(spec.parties, key=lambda p: p.name)
        }

        def on_event(event: dict[str, Any]) -> None:
            task = tasks.get(event.get("party", ""))
            if task is None:
                return
            stage = event.get("stage")
            if event["event"] == "stage" and stage in STAGES:
                status = event.get("status")
                if status == "done":
                    extra = ""
                    if "intersection_rows" in event:
                        extra = f" ({event['intersection_rows']} rows)"
                    progress.update(
                        task, completed=STAGES.index(stage) + 1, description=f"{stage} done{extra}"
                    )
                elif status == "round":
                    progress.update(task, description=f"psi round {event['round'] + 1} with {event['peer']}")
                else:
                    progress.update(task, description=f"{stage}…")
            elif event["event"] == "result":
                progress.update(task, completed=len(STAGES), description="[green]finished")
            elif event["event"] == "error":
                progress.update(task, description=f"[red]{event.get('kind', 'error')}")

        return run_vertical_job(spec, on_event=on_event)


def result_table(result: RunResult) -> Table:
    """One row per party: rows in, intersection, stage times, output files (in its own output_dir)."""
    from rich.table import Table

    label = result.parties[result.label_party]
    algo = label.metrics.algorithm if label.metrics is not None and label.metrics.algorithm else None
    what = f"{result.psi_protocol} PSI" + (f", {algo}" if algo else "")
    table = Table(title=f"SecretFlow job {result.job_id} ({what})")
    table.add_column("party", no_wrap=True)
    for col in ("rows", "∩ rows", "psi", "train", "predict"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("outputs (own dir)", overflow="fold")
    for name, r in sorted(result.parties.items()):
        st = r.stages
        table.add_row(
            name + (" (label)" if name == result.label_party else ""),
            str(r.input_rows),
            str(r.intersection_rows),
            *(f"{v:.2f}s" for v in (st.psi, st.train, st.predict)),
            " ".join(f.name for f in r.output_files),
        )
    return table


def summary_line(result: RunResult) -> str:
    """One line: intersection size, the label holder's AUC/KS (train and test when split), time."""
    parts = [f"intersection {result.intersection_rows} rows"]
    m = result.parties[result.label_party].metrics
    if m is not None:
        text = f"{m.algorithm or 'model'} AUC {m.auc:.4f}"
        if m.ks is not None:
            text += f" KS {m.ks:.4f}"
        if m.auc_test is not None:
            text += f" (train AUC {m.auc_train:.4f}, test AUC {m.auc_test:.4f} on {m.n_test} rows)"
        parts.append(text + f" at {result.label_party}")
    parts.append(f"{result.elapsed_s:.1f}s in all")
    return " · ".join(parts)


def register(app: typer.Typer) -> None:
    """Add the ``sf`` command group."""
    sf_app = typer.Typer(
        help="SecretFlow jobs: PSI, SS-LR / SS-XGB / SGB training, joint prediction with stored model parts."
    )
    app.add_typer(sf_app, name="sf")

    @sf_app.command("run")
    def run(spec_file: Path = typer.Argument(..., help="job spec (YAML); see `dcp sf example`")) -> None:
        """Run a vertical job (per its `stages`): one real SecretFlow party process per party, on this machine."""
        from rich.console import Console

        from protocols.secretflow.errors import DcpRunError

        console = Console()
        try:
            spec = load_spec(spec_file)
        except SpecFileError as exc:
            console.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from None
        try:
            result = run_with_progress(spec, console)
        except DcpRunError as exc:
            console.print(f"[red]run failed ({type(exc).__name__}):[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
        console.print(result_table(result))
        console.print(summary_line(result), highlight=False)

    @sf_app.command("example")
    def example() -> None:
        """Print an example job spec."""
        typer.echo(EXAMPLE_SPEC, nl=False)
