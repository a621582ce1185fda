"""Seeded, deterministic generator of the bank-credit federation.

N small enterprises (keyed by valid unified social credit codes) are drawn with latent
traits — sector, district, size, financial health, recent momentum, leverage and
compliance (integrity). Every member's indicators are noisy views of those traits, so
they correlate the way real ones do:

* six departments — ``tax``, ``market``, ``social``, ``power``, ``court``, ``housing`` —
  each knowing a different part of the population (market regulation and the courts
  cover every registered enterprise, the others only those they have a record of);
* three banks — ``bank_a`` (~40 % of enterprises), ``bank_b`` (~30 %), ``bank_c`` (~25 %),
  overlapping — holding loan features and the label ``default_12m``.

Labels come from a hidden ground-truth logistic model (``TRUTH_MODEL``) in which
government indicators (tax arrears, the dishonest-debtor flag, electricity and insured-
employee trends, penalties …) carry real signal and bank features carry some. A second,
later snapshot with drift (a sector downturn, weaker momentum) is the monitoring
population for post-loan monitoring and population stability.

Layout written to ``out_dir``::

    <member>.csv, <member>.schema.json            training snapshot, one file per member
    monitoring/<member>.csv, ….schema.json         the later snapshot (banks: no label yet)
    _truth/enterprises.csv, _truth/loans.csv       latent traits, true PDs, outcomes
    _truth/model.json                              the hidden model (evaluation only)
    manifest.json                                  sizes, seed, SM3 of every file

The platform never reads ``_truth/``; only evaluation does. Generation is vectorised and
runs in fixed-size chunks, so memory stays flat with N and the output depends only on
``(n_enterprises, seed)``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from pydantic import BaseModel

from scenarios.bank_credit.errors import FederationDataError, GeneratorConfigError
from scenarios.bank_credit.schema import (
    BANKS,
    DISTRICTS,
    GUARANTEE_TYPES,
    KEY,
    LABEL,
    MEMBERS,
    SECTORS,
    TAX_GRADES,
    TableSchema,
    member_schema,
)

CHUNK_ROWS = 100_000
MAX_ENTERPRISES = 10_000_000
TRUTH_DIR = "_truth"
MONITORING_DIR = "monitoring"

Snapshot = Literal["training", "monitoring"]

# Target share of all enterprises each member knows (documentation and tests; the
# generator's coefficients are tuned to hit these).
COVERAGE_TARGETS: dict[str, float] = {
    "tax": 0.95, "market": 1.0, "social": 0.90, "power": 0.85, "court": 1.0, "housing": 0.70,
    "bank_a": 0.40, "bank_b": 0.30, "bank_c": 0.25,
}

# sector → (share, size shift, risk shift, electricity intensity, monitoring-period shock)
_SECTOR_TRAITS: dict[str, tuple[float, float, float, float, float]] = {
    "C": (0.20, 0.30, 0.00, 1.20, -0.10),
    "F": (0.08, 0.40, 0.30, 0.20, -0.35),
    "G": (0.32, -0.10, 0.10, -0.30, -0.25),
    "H": (0.10, -0.30, 0.35, 0.30, -0.45),
    "I": (0.08, 0.00, -0.10, -0.20, 0.05),
    "L": (0.12, -0.20, 0.05, -0.50, -0.10),
    "M": (0.06, -0.10, -0.20, -0.30, 0.05),
    "A": (0.04, -0.20, 0.25, 0.00, -0.10),
}
_DISTRICT_SHARES = np.array([0.08, 0.10, 0.12, 0.10, 0.14, 0.16, 0.07, 0.06, 0.08, 0.09])

# The hidden ground truth: logit P(default within 12 months) of one loan.
TRUTH_MODEL: dict[str, float] = {
    "intercept": -3.95,
    "health (latent, -)": -0.85,
    "leverage (latent)": 0.30,
    "momentum (latent, -)": -0.15,
    "tax_arrears_flag": 0.75,
    "dishonest_debtor_flag": 1.40,
    "abnormal_operation_flag": 0.55,
    "min(admin_penalties_3y, 4)": 0.22,
    "elec_trend_6m / 0.15": -0.42,
    "insured_trend_12m / 0.15": -0.30,
    "min(social_arrears_months, 6)": 0.18,
    "min(past_overdue_24m, 6)": 0.22,
    "credit_utilisation - 0.5": 0.90,
    "loan_term_months >= 24": 0.15,
    "guarantee_type == credit": 0.20,
}

_ALPHABET = np.frombuffer(b"0123456789ABCDEFGHJKLMNPQRTUWXY", dtype=np.uint8)
_USCC_WEIGHTS = np.array([1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28], dtype=np.int64)
_ORG_WEIGHTS = np.array([3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
# GB 11714 values of the USCC alphabet (digits as themselves, letters as A=10 … Z=35)
_ORG_VALUE = np.array([c - 48 if c < 58 else c - 55 for c in _ALPHABET], dtype=np.int64)
_ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_ID_CHECK = np.frombuffer(b"10X98765432", dtype=np.uint8)
_ORG_SPACE = 31**8


class FileDigest(BaseModel):
    """A written file and its content hashes."""

    path: str
    rows: int
    sm3: str
    sha256: str


class GenerationManifest(BaseModel):
    """What ``generate`` wrote: parameters, member sizes and file digests."""

    n_enterprises: int
    seed: int
    chunk_rows: int
    members: dict[str, int]
    monitoring_members: dict[str, int]
    files: list[FileDigest]


@dataclass
class FederationData:
    """The generated federation: one table per member, the monitoring snapshot, the truth.

    Tables are held in memory when generated without ``out_dir`` (or with
    ``keep_tables=True``); otherwise they are read from ``out_dir`` on demand.
    """

    n_enterprises: int
    seed: int
    schemas: dict[str, TableSchema]
    monitoring_schemas: dict[str, TableSchema]
    out_dir: Path | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    monitoring: dict[str, pd.DataFrame] = field(default_factory=dict)
    truth: dict[str, pd.DataFrame] = field(default_factory=dict)
    manifest: GenerationManifest | None = None

    @property
    def members(self) -> tuple[str, ...]:
        """All member names (departments then banks)."""
        return MEMBERS

    def table(self, member: str, snapshot: Snapshot = "training") -> pd.DataFrame:
        """The table of ``member`` in ``snapshot``."""
        if member not in MEMBERS:
            raise FederationDataError(f"unknown member {member!r}; expected one of {MEMBERS}")
        store = self.tables if snapshot == "training" else self.monitoring
        if member not in store:
            schemas = self.schemas if snapshot == "training" else self.monitoring_schemas
            store[member] = read_member_csv(self._dir(snapshot) / f"{member}.csv", schemas[member])
        return store[member]

    def truth_table(self, name: Literal["enterprises", "loans"]) -> pd.DataFrame:
        """Ground truth for evaluation only: latent traits and true PDs (never given to the platform)."""
        if name not in self.truth:
            path = self._require_dir() / TRUTH_DIR / f"{name}.csv"
            if not path.exists():
                raise FederationDataError(f"missing ground-truth file {path}")
            self.truth[name] = pd.read_csv(path, dtype={KEY: str, "district": str})
        return self.truth[name]

    def csv_path(self, member: str, snapshot: Snapshot = "training") -> Path:
        """Where ``member``'s CSV of ``snapshot`` lives (its schema is next to it as ``<member>.schema.json``)."""
        if member not in MEMBERS:
            raise FederationDataError(f"unknown member {member!r}; expected one of {MEMBERS}")
        return self._dir(snapshot) / f"{member}.csv"

    def verify(self) -> None:
        """Re-hash every file listed in the manifest; raise FederationDataError on any mismatch."""
        base = self._require_dir()
        if self.manifest is None:
            raise FederationDataError(f"{base} has no manifest to verify against")
        for f in self.manifest.files:
            path = base / f.path
            if not path.exists():
                raise FederationDataError(f"{f.path} is listed in the manifest but missing")
            if file_hashes(path) != (f.sm3, f.sha256):
                raise FederationDataError(f"{f.path} does not match its SM3 digest in the manifest")

    def _require_dir(self) -> Path:
        if self.out_dir is None:
            raise FederationDataError("tables were not kept in memory and no out_dir was written")
        return self.out_dir

    def _dir(self, snapshot: Snapshot) -> Path:
        base = self._require_dir()
        return base if snapshot == "training" else base / MONITORING_DIR

    @classmethod
    def load(cls, out_dir: Path) -> FederationData:
        """Open a directory written by :func:`generate` (tables are read lazily)."""
        out_dir = Path(out_dir)
        manifest_path = out_dir / "manifest.json"
        if not manifest_path.exists():
            raise FederationDataError(f"{out_dir} is not a generated federation (no manifest.json)")
        try:
            manifest = GenerationManifest.model_validate_json(manifest_path.read_text("utf-8"))
        except ValueError as exc:
            raise FederationDataError(f"{manifest_path} is not a valid manifest: {exc}") from exc
        schemas, mon = {}, {}
        for m in MEMBERS:
            for snap, target, base in (("training", schemas, out_dir), ("monitoring", mon, out_dir / MONITORING_DIR)):
                p = base / f"{m}.schema.json"
                if not p.exists():
                    raise FederationDataError(f"missing schema {p}")
                try:
                    target[m] = TableSchema.read(p)
                except ValueError as exc:
                    raise FederationDataError(f"{p} is not a valid schema: {exc}") from exc
                if target[m].snapshot != snap:
                    raise FederationDataError(f"{p} is the {target[m].snapshot} snapshot, expected {snap}")
        return cls(n_enterprises=manifest.n_enterprises, seed=manifest.seed, schemas=schemas,
                   monitoring_schemas=mon, out_dir=out_dir, manifest=manifest)


def _arrow_schema(schema: TableSchema) -> pa.Schema:
    kinds = {"string": pa.string(), "int": pa.int64(), "float": pa.float64()}
    return pa.schema([(c.name, kinds[c.dtype]) for c in schema.columns])


def read_member_csv(path: Path, schema: TableSchema) -> pd.DataFrame:
    """Read a member CSV with the column types of its schema (keys and codes stay text)."""
    if not path.exists():
        raise FederationDataError(f"missing member table {path}")
    arrow = _arrow_schema(schema)
    opts = pacsv.ConvertOptions(column_types=arrow, strings_can_be_null=True, include_columns=arrow.names)
    table = pacsv.read_csv(path, convert_options=opts)
    if table.column_names != arrow.names:
        raise FederationDataError(f"{path} columns {table.column_names} do not match its schema {arrow.names}")
    return table.to_pandas()


# ---------------------------------------------------------------- identifiers

def uscc_codes(index: np.ndarray, district: np.ndarray, individual: np.ndarray, seed: int) -> np.ndarray:
    """Valid, unique USCCs (GB 32100-2015) for enterprise numbers ``index``.

    The 8-character organization-code body is an affine bijection of the enterprise
    number modulo 31**8, so codes never collide; both check characters are computed.
    """
    rs = np.random.default_rng([seed, 0xC0DE])
    mult = int(rs.integers(10**9, _ORG_SPACE - 1))
    while mult % 31 == 0:
        mult += 1
    offset = int(rs.integers(0, _ORG_SPACE))
    body = (index.astype(np.int64) * mult + offset) % _ORG_SPACE
    n = len(index)
    digits = np.empty((n, 17), dtype=np.int64)  # USCC alphabet indices of the first 17 chars
    digits[:, 0] = 9
    digits[:, 1] = np.where(individual, 2, 1)
    region = np.array([[int(ch) for ch in d] for d in DISTRICTS], dtype=np.int64)
    digits[:, 2:8] = region[district]
    v = body.copy()
    for pos in range(7, -1, -1):
        digits[:, 8 + pos] = v % 31
        v //= 31
    org_total = (_ORG_VALUE[digits[:, 8:16]] * _ORG_WEIGHTS).sum(axis=1)
    r = 11 - org_total % 11  # 1..11; 10 → X, 11 → 0
    org_check = np.where(r == 11, 0, np.where(r == 10, 29, r))  # 29 is the index of 'X'
    digits[:, 16] = org_check
    check = (31 - (digits * _USCC_WEIGHTS).sum(axis=1) % 31) % 31
    chars = np.empty((n, 18), dtype=np.uint8)
    chars[:, :17] = _ALPHABET[digits]
    chars[:, 17] = _ALPHABET[check]
    return chars.view("S18").ravel()


def resident_ids(rng: np.random.Generator, district: np.ndarray) -> np.ndarray:
    """Valid GB 11643 resident ID numbers (born 1955–2000) registered in ``district``."""
    n = len(district)
    region = np.array([[int(ch) for ch in d] for d in DISTRICTS], dtype=np.int64)[district]
    birth = np.datetime64("1955-01-01") + rng.integers(0, 46 * 365, n).astype("timedelta64[D]")
    ymd = pd.DatetimeIndex(birth)
    date_digits = np.stack([ymd.year // 1000, ymd.year // 100 % 10, ymd.year // 10 % 10, ymd.year % 10,
                            ymd.month // 10, ymd.month % 10, ymd.day // 10, ymd.day % 10], axis=1)
    seq = rng.integers(0, 1000, n)
    seq_digits = np.stack([seq // 100, seq // 10 % 10, seq % 10], axis=1)
    d17 = np.concatenate([region, date_digits, seq_digits], axis=1).astype(np.int64)
    check = _ID_CHECK[(d17 * _ID_WEIGHTS).sum(axis=1) % 11]
    chars = np.empty((n, 18), dtype=np.uint8)
    chars[:, :17] = d17 + 48
    chars[:, 17] = check
    return chars.view("S18").ravel()


# ---------------------------------------------------------------- latent traits and indicators

def _bytes(values: list[str] | tuple[str, ...]) -> np.ndarray:
    return np.array([v.encode() for v in values])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class _Latent:
    sector: np.ndarray
    district: np.ndarray
    individual: np.ndarray
    log_size: np.ndarray
    age: np.ndarray
    health: np.ndarray
    momentum: np.ndarray
    leverage: np.ndarray
    integrity: np.ndarray


def _traits(idx: int) -> np.ndarray:
    return np.array([t[idx] for t in _SECTOR_TRAITS.values()])


def _latents(rng: np.random.Generator, n: int) -> _Latent:
    sector = rng.choice(len(SECTORS), size=n, p=_traits(0))
    district = rng.choice(len(DISTRICTS), size=n, p=_DISTRICT_SHARES)
    log_size = rng.normal(0.0, 1.0, n) + _traits(1)[sector]
    individual = rng.random(n) < _sigmoid(-1.6 - 1.2 * log_size)
    age = np.clip(rng.gamma(1.8, 4.0, n), 0.1, 45.0)
    health = (0.85 * rng.normal(0.0, 1.0, n) + 0.2 * log_size + 0.3 * (np.log1p(age) - 1.9)
              - 1.2 * _traits(2)[sector])
    momentum = 0.3 * health + rng.normal(0.0, 0.95, n)
    leverage = rng.normal(0.0, 1.0, n) + 0.15 * log_size
    integrity = 0.3 * health + rng.normal(0.0, 0.95, n)
    return _Latent(sector, district, individual, log_size, age, health, momentum, leverage, integrity)


def _drift(rng: np.random.Generator, lat: _Latent) -> _Latent:
    """The same enterprises a year later: persistence, a sector downturn and weaker momentum."""
    n = len(lat.health)
    shock = _traits(4)[lat.sector]
    health = 0.8 * lat.health + 0.25 * lat.momentum + rng.normal(0.0, 0.45, n) + shock
    momentum = 0.3 * lat.momentum + rng.normal(-0.15, 0.95, n) + 0.8 * shock
    leverage = 0.85 * lat.leverage + rng.normal(0.12, 0.5, n)
    log_size = lat.log_size + 0.1 * lat.momentum + rng.normal(0.0, 0.1, n)
    return _Latent(lat.sector, lat.district, lat.individual, log_size, lat.age + 1.0, health, momentum,
                   leverage, lat.integrity)


def _poisson(rng: np.random.Generator, log_rate: np.ndarray) -> np.ndarray:
    return rng.poisson(np.exp(log_rate)).astype(np.float64)


def _departments(rng: np.random.Generator, lat: _Latent, prev: dict[str, dict[str, np.ndarray]] | None
                 ) -> dict[str, dict[str, np.ndarray]]:
    """Full (unmasked) department indicators; ``prev`` carries persistent values into a later snapshot."""
    n = len(lat.health)
    h, m, g, s = lat.health, lat.momentum, lat.integrity, lat.log_size
    norm = lambda sd: rng.normal(0.0, sd, n)  # noqa: E731

    # tax
    vat = np.exp(11.3 + 1.1 * s + 0.25 * h + norm(0.5))
    vat = np.where(rng.random(n) < _sigmoid(-2.6 - 1.2 * s), 0.0, vat)  # small-scale exemption
    grade_score = 0.6 * h + 0.7 * g + norm(0.6)
    grade = np.select([grade_score < -1.9, grade_score < -1.1, grade_score < 0.9], [0, 1, 3], 4)
    grade = np.where((lat.age < 1.5) & (grade >= 3), 2, grade)  # new enterprises are graded M
    arrears_flag = rng.random(n) < _sigmoid(-3.1 - 0.9 * h - 0.9 * g)
    tax = {
        "vat_paid_12m": np.round(vat, 2),
        "vat_growth_12m": np.round(0.15 * m + 0.05 * h + norm(0.12), 4),
        "tax_credit_grade": _bytes(TAX_GRADES)[grade],
        "tax_arrears_amount": np.round(np.where(arrears_flag, np.exp(9.0 + 0.5 * s + norm(1.0)), 0.0), 2),
        "late_filings_12m": _poisson(rng, -1.6 - 0.4 * g - 0.3 * h),
    }

    # market regulation
    cap = np.exp(3.5 + 0.9 * s + norm(0.9))
    cap = np.where(cap < 10, np.round(cap, 1), np.round(cap, -1))
    abnormal = rng.random(n) < _sigmoid(-3.0 - 0.9 * h - 0.7 * g)
    if prev is not None:
        abnormal |= (prev["market"]["abnormal_operation_flag"] > 0) & (rng.random(n) < 0.6)
    market = {
        "enterprise_age_years": np.round(lat.age, 1),
        "registered_capital_10k": np.maximum(cap, 1.0),
        "industry_code": _bytes(SECTORS)[lat.sector],
        "district_code": _bytes(DISTRICTS)[lat.district],
        "individual_business": lat.individual.astype(np.float64),
        "abnormal_operation_flag": abnormal.astype(np.float64),
        "admin_penalties_3y": _poisson(rng, -1.9 - 0.8 * g - 0.3 * h + 0.15 * s),
        "legal_rep_id": prev["market"]["legal_rep_id"] if prev is not None else resident_ids(rng, lat.district),
    }
    if prev is not None:
        market["registered_capital_10k"] = prev["market"]["registered_capital_10k"]

    # social security
    insured = np.maximum(1.0, np.round(np.exp(1.6 + 0.9 * s + 0.15 * h + norm(0.35))))
    social = {
        "insured_employees": insured,
        "insured_trend_12m": np.round(0.12 * m + 0.04 * h + norm(0.10), 4),
        "social_arrears_months": np.minimum(12.0, _poisson(rng, -2.0 - 0.9 * h - 0.5 * g)),
    }

    # power supply
    power = {
        "elec_kwh_month_avg": np.round(np.exp(7.0 + 1.0 * s + _traits(3)[lat.sector] + 0.1 * h + norm(0.4)), 1),
        "elec_trend_6m": np.round(0.12 * m + 0.03 * h + norm(0.10), 4),
        "elec_cv_12m": np.round(np.exp(-1.6 - 0.2 * h + norm(0.3)), 4),
        "elec_fee_overdue_12m": np.minimum(12.0, _poisson(rng, -2.6 - 0.8 * h)),
    }

    # courts (every registered enterprise; zero counts for most)
    cases = _poisson(rng, -1.3 + 0.35 * s - 0.25 * h)
    defendant = rng.binomial(cases.astype(np.int64), _sigmoid(-0.3 - 0.6 * h - 0.3 * g)).astype(np.float64)
    enforcement = _poisson(rng, -2.9 - 1.0 * h - 0.7 * g)
    dishonest = rng.random(n) < _sigmoid(-4.6 - 1.4 * h - 1.2 * g)
    if prev is not None:
        dishonest |= (prev["court"]["dishonest_debtor_flag"] > 0) & (rng.random(n) < 0.7)
    enforcement = np.where(dishonest, np.maximum(enforcement, 1.0), enforcement)
    court = {
        "court_cases_3y": np.maximum(cases, defendant),
        "defendant_cases_3y": defendant,
        "enforcement_cases_3y": enforcement,
        "enforcement_amount_10k": np.round(np.where(enforcement > 0, np.exp(2.5 + 0.4 * s + norm(1.0)), 0.0), 2),
        "dishonest_debtor_flag": dishonest.astype(np.float64),
    }
    court["court_cases_3y"] = np.maximum(court["court_cases_3y"], enforcement)

    # housing provident fund
    share = _sigmoid(-0.3 + 0.5 * h + 0.3 * s)
    housing = {
        "hf_contributors": np.maximum(1.0, rng.binomial(insured.astype(np.int64), share).astype(np.float64)),
        "hf_arrears_months": np.minimum(12.0, _poisson(rng, -2.3 - 0.9 * h - 0.4 * g)),
        "hf_avg_base": np.round(np.exp(8.5 + 0.15 * s + 0.1 * h + norm(0.2)), 0),
    }
    return {"tax": tax, "market": market, "social": social, "power": power, "court": court, "housing": housing}


def _cell_missing(rng: np.random.Generator, lat: _Latent, full: dict[str, dict[str, np.ndarray]]
                  ) -> dict[str, dict[str, np.ndarray]]:
    """Published department values: structural and random missing cells (NaN / empty string)."""
    n = len(lat.age)
    out = {m: dict(cols) for m, cols in full.items()}

    def blank(member: str, col: str, mask: np.ndarray) -> None:
        v = out[member][col]
        out[member][col] = np.where(mask, b"" if v.dtype.kind == "S" else np.nan, v)

    young = lat.age < 1.0
    blank("tax", "vat_growth_12m", young | (rng.random(n) < 0.02))
    blank("tax", "tax_credit_grade", rng.random(n) < 0.01)
    blank("market", "registered_capital_10k", rng.random(n) < 0.03)
    blank("social", "insured_trend_12m", young | (rng.random(n) < 0.03))
    blank("power", "elec_trend_6m", (lat.age < 0.5) | (rng.random(n) < 0.02))
    blank("power", "elec_cv_12m", (lat.age < 0.5) | (rng.random(n) < 0.02))
    blank("housing", "hf_avg_base", rng.random(n) < 0.05)
    return out


def _coverage(rng: np.random.Generator, lat: _Latent) -> dict[str, np.ndarray]:
    """Which enterprises each member knows (fixed for both snapshots)."""
    n = len(lat.age)
    s, h, ind = lat.log_size, lat.health, lat.individual.astype(np.float64)
    elec = _traits(3)[lat.sector]
    sec = lat.sector
    p = {
        "tax": _sigmoid(3.3 + 0.7 * s - 1.4 * ind + 0.4 * np.log(lat.age)),
        "market": np.ones(n),
        "social": _sigmoid(3.0 + 0.9 * s - 1.2 * ind),
        "power": _sigmoid(1.85 + 0.5 * s + 0.6 * elec),
        "court": np.ones(n),
        "housing": _sigmoid(1.35 + 0.8 * s + 0.4 * h - 1.0 * ind),
        "bank_a": _sigmoid(-0.42 + 0.5 * s + 0.3 * h),
        "bank_b": _sigmoid(-0.95 - 0.2 * s + 0.5 * (sec == SECTORS.index("A")) + 0.4 * ind),
        "bank_c": _sigmoid(-1.2 + 0.3 * s + 0.2 * h + 0.4 * np.isin(sec, [SECTORS.index("I"), SECTORS.index("M")])),
    }
    return {m: rng.random(n) < p[m] for m in MEMBERS}


def _bank(rng: np.random.Generator, lat: _Latent, static: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """One bank's loan features for every enterprise (its customers are selected afterwards)."""
    n = len(lat.age)
    h, g, lev, s = lat.health, lat.integrity, lat.leverage, lat.log_size
    view = h + rng.normal(0.0, 1.0, n)  # the bank's own, noisy view of health
    if static is None:
        amount = np.exp(3.6 + 0.75 * s + 0.35 * lev + rng.normal(0.0, 0.5, n))
        static = {
            "loan_amount_10k": np.round(np.where(amount >= 10, np.round(amount / 5) * 5, amount), 1),
            "loan_term_months": rng.choice(np.array([6.0, 12.0, 24.0, 36.0]), size=n, p=[0.15, 0.5, 0.25, 0.1]),
            "interest_rate_pct": np.round(3.45 + 1.4 * _sigmoid(-0.6 * view) + rng.normal(0, 0.25, n), 2),
            "guarantee_type": _bytes(GUARANTEE_TYPES)[np.where(
                rng.random(n) < 0.8, np.select([view + 0.3 * s > 0.6, view + 0.3 * s > -0.6], [0, 1], 2),
                rng.integers(0, 3, n))],
            "months_as_customer": np.maximum(1.0, np.minimum(np.round(lat.age * 12), np.round(rng.gamma(2.0, 18.0, n)))),
        }
    else:
        static = dict(static)
        static["months_as_customer"] = static["months_as_customer"] + 12
    dynamic = {
        "past_overdue_24m": _poisson(rng, -1.4 - 0.55 * h - 0.35 * g + 0.25 * lev + rng.normal(0.0, 0.3, n)),
        "credit_utilisation": np.round(_sigmoid(0.2 + 0.9 * lev - 0.35 * h + rng.normal(0.0, 0.6, n)), 4),
    }
    return {**static, **dynamic}


def _enterprise_logit(lat: _Latent, full: dict[str, dict[str, np.ndarray]]) -> np.ndarray:
    t = TRUTH_MODEL
    return (t["intercept"]
            + t["health (latent, -)"] * lat.health
            + t["leverage (latent)"] * lat.leverage
            + t["momentum (latent, -)"] * lat.momentum
            + t["tax_arrears_flag"] * (full["tax"]["tax_arrears_amount"] > 0)
            + t["dishonest_debtor_flag"] * full["court"]["dishonest_debtor_flag"]
            + t["abnormal_operation_flag"] * full["market"]["abnormal_operation_flag"]
            + t["min(admin_penalties_3y, 4)"] * np.minimum(full["market"]["admin_penalties_3y"], 4)
            + t["elec_trend_6m / 0.15"] * full["power"]["elec_trend_6m"] / 0.15
            + t["insured_trend_12m / 0.15"] * full["social"]["insured_trend_12m"] / 0.15
            + t["min(social_arrears_months, 6)"] * np.minimum(full["social"]["social_arrears_months"], 6))


def _loan_logit(enterprise: np.ndarray, bank: dict[str, np.ndarray]) -> np.ndarray:
    t = TRUTH_MODEL
    return (enterprise
            + t["min(past_overdue_24m, 6)"] * np.minimum(bank["past_overdue_24m"], 6)
            + t["credit_utilisation - 0.5"] * (bank["credit_utilisation"] - 0.5)
            + t["loan_term_months >= 24"] * (bank["loan_term_months"] >= 24)
            + t["guarantee_type == credit"] * (bank["guarantee_type"] == b"credit"))


# ---------------------------------------------------------------- chunks and output

@dataclass
class _Chunk:
    training: dict[str, pa.Table]
    monitoring: dict[str, pa.Table]
    truth: dict[str, pa.Table]


def _text(v: np.ndarray) -> pa.Array:
    return pa.array(v, type=pa.binary()).cast(pa.string())


def _arrow_table(cols: dict[str, np.ndarray], schema: TableSchema) -> pa.Table:
    arrays = []
    for c in schema.columns:
        v = cols[c.name]
        if c.dtype == "string":
            arrays.append(pa.array(v, type=pa.binary(), mask=(v == b"")).cast(pa.string()))
        elif c.dtype == "int":
            miss = np.isnan(v)
            arrays.append(pa.array(np.where(miss, 0, v).astype(np.int64), type=pa.int64(),
                                   mask=miss if miss.any() else None))
        else:
            miss = np.isnan(v)
            arrays.append(pa.array(v, type=pa.float64(), mask=miss if miss.any() else None))
    return pa.Table.from_arrays(arrays, schema=_arrow_schema(schema))


def _chunk(seed: int, chunk_no: int, start: int, n: int, schemas: dict[Snapshot, dict[str, TableSchema]]) -> _Chunk:
    rng = np.random.default_rng([seed, chunk_no])
    lat = _latents(rng, n)
    keys = uscc_codes(np.arange(start, start + n), lat.district, lat.individual, seed)
    cover = _coverage(rng, lat)
    full0 = _departments(rng, lat, None)
    pub0 = _cell_missing(rng, lat, full0)
    banks0 = {b: _bank(rng, lat, None) for b in BANKS}

    lat1 = _drift(rng, lat)
    full1 = _departments(rng, lat1, full0)
    pub1 = _cell_missing(rng, lat1, full1)
    banks1 = {b: _bank(rng, lat1, {k: banks0[b][k] for k in ("loan_amount_10k", "loan_term_months",
                                                               "interest_rate_pct", "guarantee_type",
                                                               "months_as_customer")}) for b in BANKS}

    eta0, eta1 = _enterprise_logit(lat, full0), _enterprise_logit(lat1, full1)
    training: dict[str, pa.Table] = {}
    monitoring: dict[str, pa.Table] = {}
    loans = []
    for m in MEMBERS:
        rows = np.flatnonzero(cover[m])
        rows = rows[rng.permutation(len(rows))]  # each member keeps its own row order
        if m in BANKS:
            p0 = _sigmoid(_loan_logit(eta0, banks0[m]))
            p1 = _sigmoid(_loan_logit(eta1, banks1[m]))
            y0 = (rng.random(n) < p0).astype(np.float64)
            y1 = (rng.random(n) < p1).astype(np.float64)
            cols0 = {**banks0[m], LABEL: y0}
            cols1 = banks1[m]
            loans.append(pa.table({KEY: _text(keys[rows]), "bank": _text(np.full(len(rows), m.encode())), "pd_true": np.round(p0[rows], 6),
                                   LABEL: y0[rows].astype(np.int64), "pd_true_monitoring": np.round(p1[rows], 6),
                                   "default_12m_monitoring": y1[rows].astype(np.int64)}))
        else:
            cols0, cols1 = pub0[m], pub1[m]
        training[m] = _arrow_table({KEY: keys[rows], **{k: v[rows] for k, v in cols0.items()}},
                                   schemas["training"][m])
        monitoring[m] = _arrow_table({KEY: keys[rows], **{k: v[rows] for k, v in cols1.items()}},
                                     schemas["monitoring"][m])
    enterprises = pa.table({
        KEY: _text(keys), "sector": _text(_bytes(SECTORS)[lat.sector]), "district": _text(_bytes(DISTRICTS)[lat.district]),
        "log_size": np.round(lat.log_size, 4), "health": np.round(lat.health, 4),
        "momentum": np.round(lat.momentum, 4), "leverage": np.round(lat.leverage, 4),
        "integrity": np.round(lat.integrity, 4), "logit_enterprise": np.round(eta0, 6),
        "health_monitoring": np.round(lat1.health, 4), "logit_enterprise_monitoring": np.round(eta1, 6),
        **{f"in_{m}": cover[m].astype(np.int64) for m in MEMBERS},
    })
    return _Chunk(training, monitoring, {"enterprises": enterprises, "loans": pa.concat_tables(loans)})


def _chunks(n: int, seed: int, schemas: dict[Snapshot, dict[str, TableSchema]]) -> Iterator[_Chunk]:
    for chunk_no, start in enumerate(range(0, n, CHUNK_ROWS)):
        yield _chunk(seed, chunk_no, start, min(CHUNK_ROWS, n - start), schemas)


class _Sinks:
    """CSV writers appended chunk by chunk (on one background thread, so writing chunk k
    overlaps generating chunk k+1; at most one chunk is in flight), plus optional in-memory copies."""

    def __init__(self, out_dir: Path | None, keep: bool) -> None:
        self.out_dir, self.keep = out_dir, keep
        self.writers: dict[str, pacsv.CSVWriter] = {}
        self.parts: dict[str, list[pa.Table]] = {}
        self.rows: dict[str, int] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bank-credit-csv")
        self._pending: Future[None] | None = None

    def write_chunk(self, items: list[tuple[str, pa.Table]]) -> None:
        for rel, table in items:
            self.rows[rel] = self.rows.get(rel, 0) + table.num_rows
            if self.keep:
                self.parts.setdefault(rel, []).append(table)
        if self.out_dir is not None:
            self._wait()
            self._pending = self._pool.submit(self._write, items)

    def _write(self, items: list[tuple[str, pa.Table]]) -> None:
        assert self.out_dir is not None
        for rel, table in items:
            if rel not in self.writers:
                path = self.out_dir / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                self.writers[rel] = pacsv.CSVWriter(str(path), table.schema,
                                                    write_options=pacsv.WriteOptions(quoting_style="needed"))
            self.writers[rel].write_table(table)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        try:
            self._wait()
        finally:
            self._pool.shutdown(wait=True)
            for w in self.writers.values():
                w.close()

    def frame(self, rel: str) -> pd.DataFrame:
        return pa.concat_tables(self.parts[rel]).to_pandas()


def file_hashes(path: Path) -> tuple[str, str]:
    """(SM3, SHA-256) hex digests of a file, streamed through OpenSSL."""
    sm3, sha = hashlib.new("sm3"), hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            sm3.update(block)
            sha.update(block)
    return sm3.hexdigest(), sha.hexdigest()


def generate(n_enterprises: int = 20_000, seed: int = 7, out_dir: Path | None = None, *,
             keep_tables: bool | None = None, overwrite: bool = False) -> FederationData:
    """Generate the federation: ``n_enterprises`` enterprises, deterministic in ``(n_enterprises, seed)``.

    With ``out_dir`` every member's CSV and schema, the monitoring snapshot, the ground
    truth and a manifest (with SM3/SHA-256 of every file) are written there. Tables are kept
    in memory when ``keep_tables`` is true (default: only when no ``out_dir`` is given).
    An existing non-empty ``out_dir`` is refused unless ``overwrite`` is set. Files are
    written to a staging directory next to ``out_dir`` and moved into place only when
    complete, so a failed run leaves nothing half-written (and an overwritten directory
    intact).
    """
    if isinstance(n_enterprises, bool) or not isinstance(n_enterprises, int | np.integer):
        raise GeneratorConfigError(f"n_enterprises must be an integer, got {n_enterprises!r}")
    if not 1 <= n_enterprises <= MAX_ENTERPRISES:
        raise GeneratorConfigError(f"n_enterprises must be between 1 and {MAX_ENTERPRISES:,}, got {n_enterprises}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise GeneratorConfigError(f"seed must be a non-negative integer, got {seed!r}")
    n_enterprises, seed = int(n_enterprises), int(seed)
    keep = out_dir is None if keep_tables is None else keep_tables
    staging: Path | None = None
    if out_dir is not None:
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise GeneratorConfigError(f"out_dir {out_dir} exists and is not a directory")
        if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
            raise GeneratorConfigError(f"out_dir {out_dir} is not empty (pass overwrite=True to replace it)")
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        data = _generate(n_enterprises, seed, staging, keep)
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if out_dir is not None and staging is not None:
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
        data.out_dir = out_dir
    return data


def _generate(n_enterprises: int, seed: int, out_dir: Path | None, keep: bool) -> FederationData:
    schemas: dict[Snapshot, dict[str, TableSchema]] = {
        snap: {m: member_schema(m, snap) for m in MEMBERS} for snap in ("training", "monitoring")
    }
    sinks = _Sinks(out_dir, keep)
    try:
        for chunk in _chunks(n_enterprises, seed, schemas):
            items = [(f"{m}.csv", chunk.training[m]) for m in MEMBERS]
            items += [(f"{MONITORING_DIR}/{m}.csv", chunk.monitoring[m]) for m in MEMBERS]
            items += [(f"{TRUTH_DIR}/{name}.csv", table) for name, table in chunk.truth.items()]
            sinks.write_chunk(items)
    finally:
        sinks.close()

    for snap, base in (("training", ""), ("monitoring", f"{MONITORING_DIR}/")):
        for m in MEMBERS:
            schemas[snap][m] = schemas[snap][m].model_copy(update={"rows": sinks.rows[f"{base}{m}.csv"]})

    data = FederationData(n_enterprises=n_enterprises, seed=seed, schemas=schemas["training"],
                          monitoring_schemas=schemas["monitoring"], out_dir=out_dir)
    if keep:
        data.tables = {m: sinks.frame(f"{m}.csv") for m in MEMBERS}
        data.monitoring = {m: sinks.frame(f"{MONITORING_DIR}/{m}.csv") for m in MEMBERS}
        data.truth = {n: sinks.frame(f"{TRUTH_DIR}/{n}.csv") for n in ("enterprises", "loans")}
    if out_dir is not None:
        for snap, base in (("training", out_dir), ("monitoring", out_dir / MONITORING_DIR)):
            for m in MEMBERS:
                schemas[snap][m].write(base / f"{m}.schema.json")
        (out_dir / TRUTH_DIR / "model.json").write_text(json.dumps({
            "description": "hidden ground truth: logit P(default_12m) of one loan; evaluation only",
            "coefficients": TRUTH_MODEL}, indent=2) + "\n", "utf-8")
        paths = sorted(p for p in out_dir.rglob("*") if p.is_file())
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="bank-credit-hash") as pool:
            digests = list(pool.map(file_hashes, paths))  # hashlib releases the GIL on large buffers
        files = [FileDigest(path=p.relative_to(out_dir).as_posix(), rows=sinks.rows.get(p.relative_to(out_dir).as_posix(), 0),
                            sm3=sm3, sha256=sha) for p, (sm3, sha) in zip(paths, digests, strict=True)]
        data.manifest = GenerationManifest(
            n_enterprises=n_enterprises, seed=seed, chunk_rows=CHUNK_ROWS,
            members={m: schemas["training"][m].rows for m in MEMBERS},
            monitoring_members={m: schemas["monitoring"][m].rows for m in MEMBERS}, files=files)
        (out_dir / "manifest.json").write_text(data.manifest.model_dump_json(indent=2) + "\n", "utf-8")
    return data
