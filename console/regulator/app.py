"""The regulator's console pages: overview, authorizations and receipts (searchable by member,
dataset, job and time; paginated), a job's whole record, usage over time as charts, the audit's
findings with their evidence, and the anchored audit heads. Every page is a GET whose URL holds the
whole query, so every view is a deep link."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from console.i18n import N_, gettext
from console.regulator.charts import usage_svg
from console.regulator.index import ChainIndex, Search, choose_bucket, hex0x
from console.web import Console, NavItem, mount_static, paginate
from contracts.audit import Finding, FindingKind
from contracts.client import ChainClient
from contracts.models import Role

TITLE = N_("dcp regulator console")
NAV = [
    NavItem("/", N_("Overview")),
    NavItem("/authorizations", N_("Authorizations")),
    NavItem("/receipts", N_("Receipts")),
    NavItem("/usage", N_("Usage")),
    NavItem("/findings", N_("Audit findings")),
    NavItem("/anchors", N_("Audit anchors")),
]

#: Each finding kind's name and what it means, by the kind's value (kinds the audit may add later
#: fall back to their value: see :func:`finding_text`).
FINDINGS: dict[str, tuple[str, str]] = {
    "receipt_without_authorization": (
        N_("Receipt without authorization"), N_("A dataset was used under a job that has no authorization.")),
    "receipt_outside_authorization": (
        N_("Receipt outside the authorization"),
        N_("A use was recorded, started or finished when the authorization was not live "
           "(before it was written, after expiry or revocation), or for a dataset it does not cover.")),
    "runs_beyond_maximum": (
        N_("Runs beyond the maximum"), N_("A dataset was used more times than the authorization allows.")),
    "approval_missing": (
        N_("Approval missing"),
        N_("A dataset owner did not approve these exact terms, or the aggregate signature does not verify.")),
    "receipt_from_non_owner": (
        N_("Receipt from a non-owner"),
        N_("The receipt was recorded by a node that did not own the dataset or was not an active member.")),
    "receipt_run_too_short": (
        N_("Run too short"),
        N_("The receipt claims a run too short to be real: its times were not measured.")),
    "receipt_times_disagree_with_block": (
        N_("Run times disagree with the chain"),
        N_("The run claims to finish after the block that recorded it, or before it started.")),
    "anchor_went_backwards": (
        N_("Audit anchor went backwards"),
        N_("A node anchored a shorter audit log than before, or the same length with a different head: "
           "its log was rewritten.")),
    "digest_mismatch": (
        N_("Digest mismatch"), N_("The digest an authorization claims is not that of its terms.")),
    "authorization_by_non_coordinator": (
        N_("Authorization by a non-coordinator"),
        N_("The authorization was written by an account that is not an active coordinator.")),
}


def finding_text(kind: FindingKind | str) -> tuple[str, str]:
    """The (untranslated) name and meaning of a finding kind; an unknown kind is shown by its value."""
    value = kind.value if isinstance(kind, FindingKind) else str(kind)
    return FINDINGS.get(value, (value, ""))


STATUS = {"live": N_("live"), "expired": N_("expired"), "revoked": N_("revoked")}
ROLES = {
    Role.NONE: N_("none"), Role.DEPARTMENT: N_("department"), Role.BANK: N_("bank"),
    Role.REGULATOR: N_("regulator"), Role.COORDINATOR: N_("coordinator"), Role.RESEARCHER: N_("researcher"),
}
METRICS = {"runs": N_("Runs (receipts)"), "rows": N_("Rows used")}
BY = {"dataset": N_("By dataset"), "department": N_("By department")}

Text = Annotated[str | None, Query(max_length=200)]
PageNo = Annotated[int, Query(ge=1, le=1_000_000)]


def _zone(name: str) -> tzinfo:
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    except Exception:  # noqa: BLE001 - no tz database: China has no DST, a fixed offset is exact
        if name == "Asia/Shanghai":
            return timezone(timedelta(hours=8), "CST")
        raise


def _parse_time(text: str | None, end: bool, tz: tzinfo) -> datetime | None:
    """A date (``YYYY-MM-DD``; as an end, the whole day counts) or a ``datetime-local`` value."""
    if not text or not text.strip():
        return None
    value = datetime.fromisoformat(text.strip())
    if len(text.strip()) == 10 and end:
        value += timedelta(days=1)
    return value if value.tzinfo else value.replace(tzinfo=tz)


def create_regulator_app(
    chain: ChainClient,
    tz: str = "Asia/Shanghai",
    page_size: int = 20,
    index: ChainIndex | None = None,
) -> FastAPI:
    """The regulator's console over ``chain`` (read-only: it never sends a transaction).

    ``tz`` is the zone times are shown and searched in; ``page_size`` the rows per list page.
    """
    zone = _zone(tz)
    idx = index or ChainIndex(chain, zone)
    console = Console(TITLE, NAV)
    env = console.env

    def when(epoch: int | None) -> Markup:
        if not epoch:
            return Markup("")
        t = datetime.fromtimestamp(epoch, zone)
        return Markup('<time datetime="{}">{}</time>').format(t.isoformat(), t.strftime("%Y-%m-%d %H:%M:%S"))

    def who(account: str | None) -> Markup:
        if not account:
            return Markup("")
        name = idx.name_of(account)
        short = account[:8] + "…" + account[-4:]
        if name:
            return Markup('{} <code title="{}">{}</code>').format(name, account, short)
        return Markup('<code title="{}">{}</code>').format(account, short)

    def dataset(dataset_id: str) -> Markup:
        row = idx.datasets.get(dataset_id)
        owner = idx.name_of(row.owner) if row else ""
        tail = Markup(" <small>({})</small>").format(owner) if owner else Markup("")
        return Markup('<code title="{}">{}…</code>{}').format(dataset_id, dataset_id[:12], tail)

    env.globals.update(when=when, who=who, dataset=dataset, finding_text=finding_text, STATUS=STATUS, ROLES=ROLES,
                       METRICS=METRICS, BY=BY, tz_name=tz)

    app = FastAPI(title="dcp regulator console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.index = idx
    mount_static(app)

    def page(request: Request, template: str, fragment: str | None = None, status_code: int = 200,
             **context: Any) -> HTMLResponse:
        return console.render(request, template, fragment=fragment, status_code=status_code, index=idx,
                              now=idx.now(), **context)

    def search_of(request: Request, member: str | None, dataset_: str | None, job: str | None,
                  since: str | None, until: str | None) -> tuple[Search, str | None]:
        try:
            q = Search(member=member or None, dataset=dataset_ or None, job=job or None,
                       since=_parse_time(since, False, zone), until=_parse_time(until, True, zone))
            return q, None
        except ValueError:
            return Search(member=member or None, dataset=dataset_ or None, job=job or None), "bad_time"

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> HTMLResponse:
        idx.refresh()
        report = idx.audit()
        members = sorted(idx.members.values(), key=lambda m: (m.role, m.name))
        return page(request, "regulator/overview.html", report=report, members=members,
                    authorizations=idx.authorizations[:5], receipts=list(reversed(idx.receipts))[:5])

    @app.get("/authorizations", response_class=HTMLResponse)
    def authorizations(request: Request, member: Text = None, dataset: Text = None, job: Text = None,
                       since: Text = None, until: Text = None, page_no: Annotated[PageNo, Query(alias="page")] = 1
                       ) -> HTMLResponse:
        idx.refresh()
        q, error = search_of(request, member, dataset, job, since, until)
        rows = idx.search_authorizations(q)
        return page(request, "regulator/authorizations.html", fragment="regulator/_authorizations.html",
                    status_code=400 if error else 200, q=q, form=dict(request.query_params), error=error,
                    page=paginate(rows, page_no, page_size))

    @app.get("/receipts", response_class=HTMLResponse)
    def receipts(request: Request, member: Text = None, dataset: Text = None, job: Text = None,
                 since: Text = None, until: Text = None, page_no: Annotated[PageNo, Query(alias="page")] = 1
                 ) -> HTMLResponse:
        idx.refresh()
        q, error = search_of(request, member, dataset, job, since, until)
        rows = idx.search_receipts(q)
        return page(request, "regulator/receipts.html", fragment="regulator/_receipts.html",
                    status_code=400 if error else 200, q=q, form=dict(request.query_params), error=error,
                    page=paginate(rows, page_no, page_size), total_rows=sum(r.row_count for r in rows))

    @app.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job(request: Request, job_id: str) -> HTMLResponse:
        idx.refresh()
        key = hex0x(job_id) if all(c in "0123456789abcdefABCDEFxX" for c in job_id) else ""
        auth = idx.authorization(key) if len(key) == 66 else None
        rows = [r for r in idx.receipts if r.job_id == key]
        if auth is None and not rows:
            return page(request, "regulator/not_found.html", status_code=404, what=job_id)
        findings = [f for f in idx.audit().findings if f.job_id is not None and hex0x(f.job_id) == key]
        return page(request, "regulator/job.html", job_id=key, auth=auth, receipts=rows, findings=findings)

    @app.get("/usage", response_class=HTMLResponse)
    def usage(request: Request, by: Literal["dataset", "department"] = "dataset",
              metric: Literal["runs", "rows"] = "runs") -> HTMLResponse:
        idx.refresh()
        series = _usage(idx, by)
        starts = [p.start for p in next(iter(series.values()))] if series else []
        table = [
            (int(start.timestamp()), values)
            for i, start in enumerate(starts)
            if any(values := [getattr(points[i], metric) for points in series.values()])
        ]
        return page(request, "regulator/usage.html", by=by, metric=metric, series=series, table=table,
                    labels={k: _series_label(idx, by, k) for k in series})

    @app.get("/usage/chart.svg")
    def usage_chart(request: Request, by: Literal["dataset", "department"] = "dataset",
                    metric: Literal["runs", "rows"] = "runs") -> Response:
        from console import i18n
        from console.web import request_locale

        idx.refresh()
        series = _usage(idx, by)
        with i18n.use_locale(request_locale(request)):
            svg = usage_svg({_series_label(idx, by, k): v for k, v in series.items()}, metric,
                            gettext(METRICS[metric]), gettext("No receipts yet"))
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})

    @app.get("/findings", response_class=HTMLResponse)
    def findings(request: Request, kind: Annotated[str | None, Query(max_length=64)] = None,
                 page_no: Annotated[PageNo, Query(alias="page")] = 1) -> HTMLResponse:
        idx.refresh()
        report = idx.audit()
        chosen = next((k for k in FindingKind if k.value == kind), None)
        rows: list[Finding] = [f for f in report.findings if chosen is None or f.kind == chosen]
        return page(request, "regulator/findings.html", fragment="regulator/_findings.html", report=report,
                    kind=chosen, kinds=list(FindingKind), counts={k: report.count(k) for k in FindingKind},
                    page=paginate(rows, page_no, page_size))

    @app.get("/anchors", response_class=HTMLResponse)
    def anchors(request: Request, node: Text = None, page_no: Annotated[PageNo, Query(alias="page")] = 1
                ) -> HTMLResponse:
        idx.refresh()
        history = [a for a in reversed(idx.anchors) if not node or idx.member_matches(node, (a.node,))]
        return page(request, "regulator/anchors.html", fragment="regulator/_anchors.html", latest=idx.latest_anchors(),
                    node=node or "", page=paginate(history, page_no, page_size))

    return app


def _usage(idx: ChainIndex, by: Literal["dataset", "department"]) -> dict[str, Any]:
    if not idx.receipts:
        return {}
    bucket = choose_bucket(min(r.recorded_at for r in idx.receipts), max(r.recorded_at for r in idx.receipts))
    return idx.usage(by, bucket)


def _series_label(idx: ChainIndex, by: str, key: str) -> str:
    if by == "department":
        return idx.name_of(key) or key[:10]
    row = idx.datasets.get(key)
    owner = idx.name_of(row.owner) if row else ""
    return f"{key[:10]}… ({owner})" if owner else f"{key[:10]}…"
