"""Per-dataset differential-privacy budget, kept by each node in its own SQLite database.

The ledger is the node's, not the coordinator's: a department decides how much ε each of
its datasets may ever spend, and refuses (:class:`PrivacyBudgetExceeded`) a query that would
go past it — before it computes or releases anything. Charges are keyed by a ``charge_id``
(job id and run number): charging the same id again for the same dataset and ε is a no-op,
so a node that crashed after charging can retry the same run without paying twice (the
department must then reuse the same noise, see ``stats.noise_rng``); reusing an id with a
different ε or dataset is :class:`BudgetChargeConflict`.

Every check-and-charge runs in one ``BEGIN IMMEDIATE`` transaction, so two processes charging
the same dataset at once cannot both squeeze under the budget.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import event, func
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, create_engine, select

from protocols.he.errors import BudgetChargeConflict, InvalidQuery, NoPrivacyBudget, PrivacyBudgetExceeded

_EPS_SLACK = 1e-12  # float tolerance when a charge exactly exhausts the budget


class PrivacyBudget(SQLModel, table=True):
    """The total ε a dataset may spend."""

    __tablename__ = "he_privacy_budget"

    dataset_id: str = Field(primary_key=True)
    epsilon_budget: float
    updated_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))


class PrivacyCharge(SQLModel, table=True):
    """One spend of ε by one query run on one dataset (append-only)."""

    __tablename__ = "he_privacy_charge"

    charge_id: str = Field(primary_key=True)
    dataset_id: str = Field(primary_key=True)
    epsilon: float
    purpose: str = ""
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))


def _immediate_transactions(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _no_pysqlite_autobegin(dbapi_conn: object, _rec: object) -> None:
        dbapi_conn.isolation_level = None  # type: ignore[attr-defined]

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: object) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # type: ignore[attr-defined]


class PrivacyLedger:
    """A node's ε ledger over one SQLite file (or any SQLAlchemy URL)."""

    def __init__(self, db: Path | str) -> None:
        url = db if isinstance(db, str) and "://" in db else f"sqlite:///{Path(db)}"
        self.engine = create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
        if url.startswith("sqlite"):
            _immediate_transactions(self.engine)
        SQLModel.metadata.create_all(
            self.engine,
            tables=[PrivacyBudget.__table__, PrivacyCharge.__table__],  # type: ignore[attr-defined]
        )

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    def set_budget(self, dataset_id: str, epsilon_budget: float) -> None:
        """Set a dataset's total ε (may be raised or lowered; spent ε is never forgotten)."""
        if not math.isfinite(epsilon_budget) or epsilon_budget < 0:
            raise InvalidQuery(f"a privacy budget must be a finite ε ≥ 0, got {epsilon_budget}")
        with Session(self.engine) as s:
            row = s.get(PrivacyBudget, dataset_id)
            if row is None:
                row = PrivacyBudget(dataset_id=dataset_id, epsilon_budget=epsilon_budget)
            else:
                row.epsilon_budget = epsilon_budget
                row.updated_at = datetime.now(timezone.utc)
            s.add(row)
            s.commit()

    def budget(self, dataset_id: str) -> float:
        """The dataset's total ε; :class:`NoPrivacyBudget` if none was set."""
        with Session(self.engine) as s:
            row = s.get(PrivacyBudget, dataset_id)
            if row is None:
                raise NoPrivacyBudget(f"dataset {dataset_id!r} has no privacy budget; a DP query cannot run")
            return row.epsilon_budget

    def spent(self, dataset_id: str) -> float:
        """ε spent so far on the dataset."""
        with Session(self.engine) as s:
            return self._spent(s, dataset_id)

    def remaining(self, dataset_id: str) -> float:
        """ε still available."""
        return max(self.budget(dataset_id) - self.spent(dataset_id), 0.0)

    @staticmethod
    def _spent(s: Session, dataset_id: str) -> float:
        total = s.exec(
            select(func.sum(PrivacyCharge.epsilon)).where(PrivacyCharge.dataset_id == dataset_id)
        ).one()
        return float(total or 0.0)

    def charge(self, dataset_id: str, charge_id: str, epsilon: float, purpose: str = "") -> float:
        """Spend ``epsilon`` on ``dataset_id`` or refuse; returns the ε remaining afterwards."""
        if not math.isfinite(epsilon) or epsilon <= 0:
            raise InvalidQuery(f"ε must be finite and positive, got {epsilon}")
        if not charge_id:
            raise InvalidQuery("a charge needs a charge id (job id and run)")
        with Session(self.engine) as s:
            budget_row = s.get(PrivacyBudget, dataset_id)
            if budget_row is None:
                raise NoPrivacyBudget(f"dataset {dataset_id!r} has no privacy budget; a DP query cannot run")
            spent = self._spent(s, dataset_id)
            existing = s.get(PrivacyCharge, (charge_id, dataset_id))
            if existing is not None:
                if not math.isclose(existing.epsilon, epsilon, rel_tol=0, abs_tol=_EPS_SLACK):
                    raise BudgetChargeConflict(
                        f"charge {charge_id!r} on {dataset_id!r} was ε={existing.epsilon:g}, now ε={epsilon:g}"
                    )
                return max(budget_row.epsilon_budget - spent, 0.0)
            if spent + epsilon > budget_row.epsilon_budget + _EPS_SLACK:
                raise PrivacyBudgetExceeded(dataset_id, budget_row.epsilon_budget, spent, epsilon)
            s.add(PrivacyCharge(charge_id=charge_id, dataset_id=dataset_id, epsilon=epsilon, purpose=purpose))
            s.commit()
            return max(budget_row.epsilon_budget - spent - epsilon, 0.0)

    def charges(self, dataset_id: str) -> list[PrivacyCharge]:
        """Every charge on the dataset, oldest first."""
        with Session(self.engine) as s:
            rows = s.exec(
                select(PrivacyCharge)
                .where(PrivacyCharge.dataset_id == dataset_id)
                .order_by(PrivacyCharge.created_at)
            ).all()
            return list(rows)
