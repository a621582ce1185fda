"""The seeded coordinator of the coordinator and security tests: no worker, the test members in its
directory, and bank's and tax's catalogs and policies as their nodes would publish them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.authkit import peer_entries


def col(grade: int = 2, category: str | None = None) -> dict:
    """One catalog column: its grade and category."""
    return {"grade": grade, "category": category}


CATALOG = {
    ("bank", "loans"): {"uscc": col(3), "bank_loan_amount": col(), "default": col()},
    ("tax", "tax"): {"uscc": col(3), "tax_vat_paid": col(), "tax_credit_grade": col(), "tax_secret": col(4),
                     "tax_case": col(2, "criminal")},
}
POLICY = {"max_grade": {"vertical_train": 3}, "default_max_grade": 2, "negative_list": ["criminal"],
          "allowed_roles": ["bank", "department"], "allowed_requesters": []}


def seeded_coordinator(work_dir: Path, **settings: Any) -> Any:
    """A ``coordinator.service.Coordinator`` over ``work_dir`` (no worker), bank and tax with ``CATALOG``
    and ``POLICY``; the caller closes it."""
    from sqlmodel import Session

    from coordinator.models import CatalogEntry, PolicySnapshot
    from coordinator.service import Coordinator
    from coordinator.settings import CoordinatorSettings

    c = Coordinator(CoordinatorSettings(work_dir=work_dir, worker=False, peers=peer_entries(), **settings))
    c.upsert_member("bank", "bank", "http://127.0.0.1:9")
    c.upsert_member("tax", "department", "http://127.0.0.1:9")
    with Session(c.engine) as s:
        for (member, ds), cols in CATALOG.items():
            s.add(CatalogEntry(member=member, dataset=ds, columns_json=json.dumps(
                [{"name": n, **m} for n, m in cols.items()]), text=f"{ds} " + " ".join(cols), max_grade=3))
        for member in ("bank", "tax"):
            s.add(PolicySnapshot(member=member, policy_json=json.dumps(POLICY)))
        s.commit()
    return c
