"""Column metadata of the bank-credit federation (what a member publishes in its catalog).

Every member table is keyed by ``uscc``; the banks also hold the label ``default_12m``.
The metadata is what the platform is allowed to read about a table: a description,
a sensitivity grade (分类分级, 1 = public … 4 = most sensitive, never leaves the node),
a category (for negative lists), and modelling hints (role, transform, ordered levels).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

KEY = "uscc"
LABEL = "default_12m"
DEPARTMENTS: tuple[str, ...] = ("tax", "market", "social", "power", "court", "housing")
BANKS: tuple[str, ...] = ("bank_a", "bank_b", "bank_c")
MEMBERS: tuple[str, ...] = DEPARTMENTS + BANKS

Dtype = Literal["string", "int", "float"]
Role = Literal["key", "feature", "label", "attribute"]
Transform = Literal["none", "log1p", "ordinal", "onehot"]


class ColumnMeta(BaseModel):
    """One published column."""

    name: str
    dtype: Dtype
    description: str
    sensitivity: int = Field(ge=1, le=4)
    category: str
    role: Role = "feature"
    unit: str | None = None
    transform: Transform = "none"
    levels: list[str] | None = None  # ordered worst → best for ordinal, all values for one-hot


class TableSchema(BaseModel):
    """The catalog entry of one member table (one snapshot)."""

    member: str
    kind: Literal["department", "bank"]
    title: str
    snapshot: Literal["training", "monitoring"] = "training"
    key: str = KEY
    label: str | None = None
    rows: int = 0
    columns: list[ColumnMeta]

    def column(self, name: str) -> ColumnMeta:
        """The metadata of column ``name`` (KeyError when absent)."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.member} has no column {name!r}")

    @property
    def feature_columns(self) -> list[str]:
        """Columns whose role is ``feature`` (what a model may use)."""
        return [c.name for c in self.columns if c.role == "feature"]

    def write(self, path: Path) -> None:
        """Write as pretty JSON (UTF-8, stable key order)."""
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n", "utf-8")

    @classmethod
    def read(cls, path: Path) -> TableSchema:
        """Read a schema written by :meth:`write`."""
        return cls.model_validate_json(path.read_text("utf-8"))


SECTORS: tuple[str, ...] = ("C", "F", "G", "H", "I", "L", "M", "A")  # GB/T 4754 sections
SECTOR_NAMES: dict[str, str] = {
    "C": "manufacturing",
    "F": "construction",
    "G": "wholesale and retail",
    "H": "accommodation and catering",
    "I": "information and software",
    "L": "leasing and business services",
    "M": "scientific and technical services",
    "A": "agriculture",
}
DISTRICTS: tuple[str, ...] = (
    "330102", "330105", "330106", "330108", "330109", "330110", "330111", "330112", "330113", "330114",
)
TAX_GRADES: list[str] = ["D", "C", "M", "B", "A"]  # ordered worst → best
GUARANTEE_TYPES: list[str] = ["credit", "guarantor", "collateral"]


def _c(name: str, dtype: Dtype, description: str, sensitivity: int, category: str, **kw: object) -> ColumnMeta:
    return ColumnMeta(name=name, dtype=dtype, description=description, sensitivity=sensitivity,
                      category=category, **kw)


def _key() -> ColumnMeta:
    return _c(KEY, "string", "unified social credit code (GB 32100-2015)", 1, "identifier", role="key")


def department_schema(member: str) -> TableSchema:
    """The published schema of department ``member``."""
    cols: dict[str, tuple[str, list[ColumnMeta]]] = {
        "tax": ("Tax bureau: VAT, tax credit grade, arrears", [
            _c("vat_paid_12m", "float", "VAT paid over the last 12 months", 3, "tax", unit="CNY", transform="log1p"),
            _c("vat_growth_12m", "float", "year-on-year change of VAT paid (fraction); empty when under a year of history",
               3, "tax", unit="fraction"),
            _c("tax_credit_grade", "string", "tax credit grade (A best … D worst; M new or small)", 2, "tax",
               transform="ordinal", levels=TAX_GRADES),
            _c("tax_arrears_amount", "float", "outstanding tax arrears", 3, "tax", unit="CNY", transform="log1p"),
            _c("late_filings_12m", "int", "late tax filings in the last 12 months", 2, "tax", unit="count",
               transform="log1p"),
        ]),
        "market": ("Market regulation: registration, abnormal-operation list, penalties", [
            _c("enterprise_age_years", "float", "years since registration", 1, "registration", unit="years",
               transform="log1p"),
            _c("registered_capital_10k", "float", "registered (subscribed) capital", 1, "registration",
               unit="10k CNY", transform="log1p"),
            _c("industry_code", "string", "industry section (GB/T 4754)", 1, "registration", transform="onehot",
               levels=list(SECTORS)),
            _c("district_code", "string", "registration district (GB/T 2260)", 1, "registration", role="attribute"),
            _c("individual_business", "int", "1 for an individual business (个体工商户), 0 for a company", 1,
               "registration"),
            _c("abnormal_operation_flag", "int", "on the abnormal-operation list (经营异常名录)", 1, "registration"),
            _c("admin_penalties_3y", "int", "administrative penalties in the last 3 years", 1, "registration",
               unit="count", transform="log1p"),
            _c("legal_rep_id", "string", "resident ID number of the legal representative (GB 11643)", 4,
               "personal_identity", role="attribute"),
        ]),
        "social": ("Human resources and social security: insured employees, arrears", [
            _c("insured_employees", "int", "employees with social insurance", 3, "employment", unit="count",
               transform="log1p"),
            _c("insured_trend_12m", "float", "change of insured employees over 12 months (fraction)", 3, "employment",
               unit="fraction"),
            _c("social_arrears_months", "int", "months of social-insurance contribution arrears (last 12)", 3,
               "employment", unit="months", transform="log1p"),
        ]),
        "power": ("Power supply company: electricity use", [
            _c("elec_kwh_month_avg", "float", "average monthly electricity use, last 12 months", 2, "energy",
               unit="kWh", transform="log1p"),
            _c("elec_trend_6m", "float", "electricity use, last 6 months vs the 6 before (fraction)", 2, "energy",
               unit="fraction"),
            _c("elec_cv_12m", "float", "coefficient of variation of monthly use", 2, "energy"),
            _c("elec_fee_overdue_12m", "int", "months with overdue electricity bills (last 12)", 2, "energy",
               unit="months", transform="log1p"),
        ]),
        "court": ("Courts: litigation, enforcement, dishonest-debtor list", [
            _c("court_cases_3y", "int", "civil and commercial cases in the last 3 years (any side)", 1, "judicial",
               unit="count", transform="log1p"),
            _c("defendant_cases_3y", "int", "cases as defendant in the last 3 years", 1, "judicial", unit="count",
               transform="log1p"),
            _c("enforcement_cases_3y", "int", "enforcement cases as the person subject to enforcement", 1,
               "judicial", unit="count", transform="log1p"),
            _c("enforcement_amount_10k", "float", "amount subject to enforcement", 2, "judicial", unit="10k CNY",
               transform="log1p"),
            _c("dishonest_debtor_flag", "int", "on the list of dishonest judgment debtors (失信被执行人)", 1,
               "judicial"),
        ]),
        "housing": ("Housing provident fund centre: contributors, arrears", [
            _c("hf_contributors", "int", "employees with housing-fund contributions", 3, "housing_fund",
               unit="count", transform="log1p"),
            _c("hf_arrears_months", "int", "months of contribution arrears (last 12)", 3, "housing_fund",
               unit="months", transform="log1p"),
            _c("hf_avg_base", "float", "average monthly contribution base", 3, "housing_fund", unit="CNY",
               transform="log1p"),
        ]),
    }
    if member not in cols:
        raise KeyError(f"unknown department {member!r}; expected one of {DEPARTMENTS}")
    title, columns = cols[member]
    return TableSchema(member=member, kind="department", title=title, columns=[_key(), *columns])


def bank_schema(member: str, snapshot: Literal["training", "monitoring"] = "training") -> TableSchema:
    """The published schema of bank ``member`` (the monitoring snapshot has no label yet)."""
    if member not in BANKS:
        raise KeyError(f"unknown bank {member!r}; expected one of {BANKS}")
    columns = [
        _key(),
        _c("loan_amount_10k", "float", "outstanding loan principal", 3, "credit", unit="10k CNY", transform="log1p"),
        _c("loan_term_months", "int", "loan term", 3, "credit", unit="months"),
        _c("interest_rate_pct", "float", "annual interest rate", 3, "credit", unit="percent"),
        _c("guarantee_type", "string", "credit (unsecured), guarantor or collateral", 3, "credit",
           transform="onehot", levels=GUARANTEE_TYPES),
        _c("past_overdue_24m", "int", "overdue instalments in the last 24 months", 3, "credit", unit="count",
           transform="log1p"),
        _c("credit_utilisation", "float", "drawn / granted credit line", 3, "credit", unit="fraction"),
        _c("months_as_customer", "int", "length of the banking relationship", 3, "credit", unit="months",
           transform="log1p"),
    ]
    label = None
    if snapshot == "training":
        columns.append(_c(LABEL, "int", "1 when the loan defaulted (90+ days past due) within 12 months", 3,
                          "label", role="label"))
        label = LABEL
    name = {"bank_a": "Bank A (city commercial bank)", "bank_b": "Bank B (rural commercial bank)",
            "bank_c": "Bank C (joint-stock bank)"}[member]
    return TableSchema(member=member, kind="bank", title=f"{name}: SME loans", snapshot=snapshot, label=label,
                       columns=columns)


def member_schema(member: str, snapshot: Literal["training", "monitoring"] = "training") -> TableSchema:
    """The schema of any member (department or bank) for ``snapshot``."""
    if member in BANKS:
        return bank_schema(member, snapshot)
    schema = department_schema(member)
    return schema.model_copy(update={"snapshot": snapshot})
