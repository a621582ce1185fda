"""The scenario's plaintext run end to end: generate, baselines, report."""

from __future__ import annotations

import json

from scenarios.bank_credit.__main__ import main


def test_plaintext_run_end_to_end(tmp_path, capsys):
    assert main(["--n", "6000", "--seed", "3", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "centralized LR" in out and "uplift" in out
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    models = {m["name"]: m for m in summary["models"]}
    assert models["centralized LR"]["auc"] > models["bank-only LR"]["auc"]
    assert (tmp_path / "report" / "report.html").stat().st_size > 3_000
    assert (tmp_path / "data" / "manifest.json").exists()
