"""The generator: determinism, valid keys, coverage, missing values, schemas, truth kept apart, bad input."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from common.ids import is_valid_resident_id, is_valid_uscc
from scenarios.bank_credit import generator as gen
from scenarios.bank_credit.errors import FederationDataError, GeneratorConfigError
from scenarios.bank_credit.generator import COVERAGE_TARGETS, FederationData, file_hashes, generate
from scenarios.bank_credit.metrics import auc, woe_binning
from scenarios.bank_credit.schema import BANKS, DEPARTMENTS, KEY, LABEL, MEMBERS, TableSchema


def _digests(manifest) -> dict[str, tuple[str, str]]:
    return {f.path: (f.sm3, f.sha256) for f in manifest.files}


def test_same_seed_gives_identical_files(tmp_path):
    a = generate(3_000, seed=11, out_dir=tmp_path / "a")
    b = generate(3_000, seed=11, out_dir=tmp_path / "b")
    da, db = _digests(a.manifest), _digests(b.manifest)
    assert da == db
    expected = {f"{m}.csv" for m in MEMBERS} | {f"monitoring/{m}.csv" for m in MEMBERS} | {
        "_truth/enterprises.csv", "_truth/loans.csv", "_truth/model.json"}
    assert expected <= set(da)
    # the manifest's digests are the files' real SM3 / SHA-256
    path = tmp_path / "a" / "tax.csv"
    assert da["tax.csv"] == file_hashes(path)
    assert da["tax.csv"][1] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert hashlib.new("sm3", path.read_bytes()).hexdigest() == da["tax.csv"][0]
    c = generate(3_000, seed=12, out_dir=tmp_path / "c")
    assert _digests(c.manifest)["tax.csv"] != da["tax.csv"]


def test_in_memory_equals_written(tmp_path):
    mem = generate(2_000, seed=5)
    disk = FederationData.load(generate(2_000, seed=5, out_dir=tmp_path / "d").out_dir)
    for m in MEMBERS:
        for snap in ("training", "monitoring"):
            pd.testing.assert_frame_equal(mem.table(m, snap), disk.table(m, snap))
    pd.testing.assert_frame_equal(mem.truth_table("loans"), disk.truth_table("loans"))


def test_every_key_is_a_valid_unique_uscc(fed20k):
    market = fed20k.table("market")
    keys = market[KEY]
    assert len(keys) == 20_000 and keys.is_unique
    assert all(is_valid_uscc(k) for k in keys)
    assert keys.str[:2].isin(["91", "92"]).all()
    assert (keys.str[:2] == "92").sum() == market["individual_business"].sum()  # type 2: individual business
    assert (keys.str[2:8] == market["district_code"]).all()
    for m in MEMBERS:
        t = fed20k.table(m)
        assert t[KEY].is_unique, m
        assert t[KEY].isin(keys).all(), m
    assert all(is_valid_resident_id(x) for x in market["legal_rep_id"])


def test_keys_stay_unique_and_valid_across_chunks(monkeypatch):
    monkeypatch.setattr(gen, "CHUNK_ROWS", 700)
    d = generate(2_000, seed=3)
    keys = d.table("market")[KEY]
    assert len(keys) == 2_000 and keys.is_unique
    assert all(is_valid_uscc(k) for k in keys)


def test_coverage_fractions_near_targets(fed20k):
    for m, target in COVERAGE_TARGETS.items():
        share = len(fed20k.table(m)) / 20_000
        assert abs(share - target) <= 0.02, (m, share, target)
    # the banks overlap, and together serve most but not all enterprises
    a, b, c = (set(fed20k.table(x)[KEY]) for x in BANKS)
    assert 0.05 < len(a & b) / 20_000 < 0.2 and 0.05 < len(a & c) / 20_000 < 0.2
    assert 0.55 < len(a | b | c) / 20_000 < 0.8
    # coverage is not random: the enterprises social security does not know are smaller
    market = fed20k.table("market")
    known = market[KEY].isin(fed20k.table("social")[KEY])
    assert market.loc[~known, "registered_capital_10k"].median() < market.loc[known, "registered_capital_10k"].median()


def test_missing_value_rates(fed20k):
    rates = {m: fed20k.table(m).isna().mean() for m in MEMBERS}
    assert 0.02 <= rates["market"]["registered_capital_10k"] <= 0.045
    assert 0.03 <= rates["tax"]["vat_growth_12m"] <= 0.09
    assert 0.003 <= rates["tax"]["tax_credit_grade"] <= 0.02
    assert 0.04 <= rates["social"]["insured_trend_12m"] <= 0.10
    assert 0.02 <= rates["power"]["elec_trend_6m"] <= 0.06
    assert 0.035 <= rates["housing"]["hf_avg_base"] <= 0.065
    for m in ("court",) + BANKS:
        assert rates[m].max() == 0.0, m
    assert (rates["market"].drop(["registered_capital_10k"]) == 0).all()
    # structural missingness: no VAT growth for enterprises registered under a year ago
    tax = fed20k.table("tax").merge(fed20k.table("market")[[KEY, "enterprise_age_years"]], on=KEY)
    assert tax.loc[tax["enterprise_age_years"] < 0.95, "vat_growth_12m"].isna().all()


def test_schemas_describe_the_tables(tmp_path):
    d = generate(1_500, seed=2, out_dir=tmp_path / "f")
    for m in MEMBERS:
        for base, snap in ((tmp_path / "f", "training"), (tmp_path / "f" / "monitoring", "monitoring")):
            schema = TableSchema.read(base / f"{m}.schema.json")
            assert schema.snapshot == snap
            header = (base / f"{m}.csv").read_text().splitlines()[0].replace('"', "").split(",")
            assert header == [c.name for c in schema.columns]
            assert header[0] == KEY
            assert schema.rows == len(d.table(m, snap))
            assert all(1 <= c.sensitivity <= 4 and c.description and c.category for c in schema.columns)
            has_label = LABEL in header
            assert has_label == (m in BANKS and snap == "training"), (m, snap)
    market = TableSchema.read(tmp_path / "f" / "market.schema.json")
    assert market.column("legal_rep_id").sensitivity == 4
    assert market.column("legal_rep_id").role == "attribute"
    assert "legal_rep_id" not in market.feature_columns


def test_truth_is_kept_apart(fed20k):
    truth_cols = {"health", "momentum", "leverage", "integrity", "pd_true", "logit_enterprise", "sector"}
    for m in MEMBERS:
        assert not truth_cols & set(fed20k.table(m).columns), m
    loans = fed20k.truth_table("loans")
    for b in BANKS:
        mine = loans[loans["bank"] == b].set_index(KEY)
        table = fed20k.table(b).set_index(KEY)
        assert len(mine) == len(table)
        assert (mine.loc[table.index, LABEL] == table[LABEL]).all()


def test_default_rates_and_drift_are_realistic(fed20k):
    for b in BANKS:
        rate = fed20k.table(b)[LABEL].mean()
        assert 0.04 <= rate <= 0.14, (b, rate)
    loans = fed20k.truth_table("loans")
    # the monitoring year is worse (sector downturn), but not catastrophic
    assert loans["pd_true"].mean() + 0.02 < loans["pd_true_monitoring"].mean() < 3 * loans["pd_true"].mean()
    # the hidden model is a good but not perfect ranker
    a = loans[loans["bank"] == "bank_a"]
    assert 0.8 < auc(a[LABEL].to_numpy(), a["pd_true"].to_numpy()) < 0.95


def test_government_indicators_carry_signal(fed20k):
    bank = fed20k.table("bank_a")[[KEY, LABEL]]
    court = bank.merge(fed20k.table("court"), on=KEY)
    tax = bank.merge(fed20k.table("tax"), on=KEY)
    power = bank.merge(fed20k.table("power"), on=KEY)
    rate = court.groupby("dishonest_debtor_flag")[LABEL].mean()
    assert rate[1] > 3 * rate[0]
    arrears = tax["tax_arrears_amount"] > 0
    assert tax.loc[arrears, LABEL].mean() > 2 * tax.loc[~arrears, LABEL].mean()
    iv = woe_binning(power["elec_trend_6m"].to_numpy(), power[LABEL].to_numpy(), n_bins=5).iv
    assert iv > 0.1  # at least a medium predictor
    grade = tax.groupby("tax_credit_grade")[LABEL].mean()
    assert grade["D"] > grade["B"] > grade["A"]


def test_monitoring_snapshot_is_the_same_population_with_drift(fed20k):
    for m in MEMBERS:
        assert set(fed20k.table(m)[KEY]) == set(fed20k.table(m, "monitoring")[KEY]), m
    t0 = fed20k.table("power").set_index(KEY)["elec_trend_6m"]
    t1 = fed20k.table("power", "monitoring").set_index(KEY)["elec_trend_6m"]
    assert t1.mean() < t0.mean() - 0.01
    b0 = fed20k.table("bank_a").set_index(KEY)
    b1 = fed20k.table("bank_a", "monitoring").set_index(KEY).loc[b0.index]
    assert (b1["loan_amount_10k"] == b0["loan_amount_10k"]).all()
    assert (b1["months_as_customer"] == b0["months_as_customer"] + 12).all()
    assert LABEL not in b1.columns
    m0 = fed20k.table("market").set_index(KEY)
    m1 = fed20k.table("market", "monitoring").set_index(KEY).loc[m0.index]
    assert (m1["legal_rep_id"] == m0["legal_rep_id"]).all()
    assert np.allclose(m1["enterprise_age_years"], m0["enterprise_age_years"] + 1.0, atol=0.051)


@pytest.mark.parametrize("n", [0, -5, 10_000_001, "100", 2.5, True])
def test_bad_size_is_refused(n):
    with pytest.raises(GeneratorConfigError):
        generate(n)


@pytest.mark.parametrize("seed", [-1, "7", None])
def test_bad_seed_is_refused(seed):
    with pytest.raises(GeneratorConfigError):
        generate(100, seed=seed)


def test_non_empty_out_dir_is_refused_and_kept(tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    with pytest.raises(GeneratorConfigError, match="not empty"):
        generate(100, out_dir=target)
    assert (target / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in target.iterdir()) == ["precious.txt"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(GeneratorConfigError, match="not a directory"):
        generate(100, out_dir=afile)
    d = generate(100, out_dir=target, overwrite=True)
    assert not (target / "precious.txt").exists() and d.manifest.members["market"] == 100


def test_loading_a_broken_directory_names_the_problem(tmp_path):
    with pytest.raises(FederationDataError, match="manifest"):
        FederationData.load(tmp_path)
    generate(300, seed=1, out_dir=tmp_path / "g")
    (tmp_path / "g" / "power.csv").unlink()
    d = FederationData.load(tmp_path / "g")
    assert len(d.table("tax")) > 0
    with pytest.raises(FederationDataError, match="power.csv"):
        d.table("power")
    with pytest.raises(FederationDataError, match="unknown member"):
        d.table("police")
    (tmp_path / "g" / "monitoring" / "court.schema.json").unlink()
    with pytest.raises(FederationDataError, match="court.schema.json"):
        FederationData.load(tmp_path / "g")
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert manifest["n_enterprises"] == 300


def test_departments_cover_the_expected_members():
    assert DEPARTMENTS == ("tax", "market", "social", "power", "court", "housing")
    assert BANKS == ("bank_a", "bank_b", "bank_c")


def test_a_failed_run_leaves_nothing_half_written(tmp_path, monkeypatch):
    target = tmp_path / "fed"
    first = generate(500, seed=1, out_dir=target)
    before = {f.path: f.sha256 for f in first.manifest.files}
    real_chunk = gen._chunk
    calls = []

    def failing_chunk(*args, **kwargs):  # the second chunk fails, as a full disk would
        calls.append(1)
        if len(calls) == 2:
            raise OSError("No space left on device")
        return real_chunk(*args, **kwargs)

    monkeypatch.setattr(gen, "CHUNK_ROWS", 200)
    monkeypatch.setattr(gen, "_chunk", failing_chunk)
    with pytest.raises(OSError, match="No space"):
        generate(500, seed=2, out_dir=target, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fed"]  # no staging directory left behind
    again = FederationData.load(target)
    assert {f.path: f.sha256 for f in again.manifest.files} == before
    assert file_hashes(target / "tax.csv")[1] == before["tax.csv"]
    calls.clear()
    with pytest.raises(OSError):
        generate(500, seed=2, out_dir=tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_verify_detects_tampering(tmp_path):
    d = generate(400, seed=4, out_dir=tmp_path / "v")
    d.verify()
    assert d.csv_path("bank_b") == tmp_path / "v" / "bank_b.csv"
    assert d.csv_path("bank_b", "monitoring") == tmp_path / "v" / "monitoring" / "bank_b.csv"
    path = d.csv_path("court")
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:-1] + ("1" if lines[1][-1] == "0" else "0")  # flip one flag
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FederationDataError, match="court.csv"):
        FederationData.load(tmp_path / "v").verify()
    (tmp_path / "v" / "manifest.json").write_text("{not json")
    with pytest.raises(FederationDataError, match="not a valid manifest"):
        FederationData.load(tmp_path / "v")
    with pytest.raises(FederationDataError):
        generate(50).verify()  # nothing written
