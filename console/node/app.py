"""The node console's pages, for the node's department officers, data stewards and auditors.

* **Inbox** — the requests, tabbed by status with their counts; each request's manifest in words
  (who asks, purpose, which columns at which grade, what leaves and to whom, expiry, runs), any
  code the job would run (shown in full), the difference from the requester's previous approved
  request, each party's decision so far; approve, or reject with a reason (approvers).
* **Changes** — the four-eyes queue: policy and grade changes proposed by one steward, applied when a
  different steward confirms them (or cancelled).
* **Datasets** — grades, categories and quality reports; a steward proposes a grade change here.
* **Policy** — the node's policy; a steward proposes a new one here.
* **Audit** — the SM3-chained log (newest first), its verification, and its anchors (on chain).
* **Receipts** — the usage receipts this node recorded for its data (one per task).

Every page is chosen by its URL (deep links), lists paginate, and every route says in its signature
who may call it (``Officer``, ``Approver``, ``Steward``, ``Reader`` of the audit log). Decisions and
changes go through the node's own services with the officer as the actor, so the console can do
nothing the node's JSON API would refuse.

:func:`create_officer_console` is the console as the node's console listener serves it (with the
officers' password + TOTP sign-in, :mod:`console.node.auth`); :func:`create_node_console` is the
same pages over any ``officer`` dependency (tests, or another login in front).
"""

import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError
from sqlmodel import Session, func, select

from console.i18n import N_
from console.node.deps import ConsoleOfficer, OfficerDependency, officer_login_required, same_origin
from console.web import Console, NavItem, mount_static, paginate_query
from nodes.errors import NodeError
from nodes.models import ApprovalRecord, ApprovalRequestOut, AuditAnchorRecord, AuditEntry, NodeTask
from nodes.services.approvals import ApprovalService

if TYPE_CHECKING:
    from nodes.context import NodeContext

TITLE = N_("dcp node console")
NAV = [NavItem("/inbox", N_("Inbox")), NavItem("/changes", N_("Changes")), NavItem("/datasets", N_("Datasets")),
       NavItem("/policy", N_("Policy")), NavItem("/audit", N_("Audit log")), NavItem("/receipts", N_("Receipts"))]
#: The inbox's tabs: status → label (None: every request).
TABS: dict[str, str] = {
    "pending": N_("Pending"), "approved": N_("Approved"), "rejected": N_("Rejected"), "expired": N_("Expired"),
}
DECISIONS = {"pending": N_("pending"), "approved": N_("approved"), "rejected": N_("rejected"),
             "expired": N_("expired")}
#: The four-eyes queue's tabs.
CHANGE_TABS = {"pending": N_("Waiting for a second officer"), "confirmed": N_("Confirmed"),
               "cancelled": N_("Cancelled"), "expired": N_("Expired")}
CHANGE_KINDS = {"policy": N_("policy"), "schema": N_("grades and categories")}
#: Words of the inbox diff's fields.
DIFF_FIELDS = {"kind": N_("Kind"), "protocol": N_("Protocol"), "purpose": N_("Purpose"),
               "max_runs": N_("Runs allowed"), "columns": N_("Columns"), "receivers": N_("Receivers")}
#: Who reads the audit log and the receipts.
AUDIT_ROLES = frozenset({"auditor", "admin"})


class PartyDecision(BaseModel):
    """One party's decision on a job, as far as this node knows."""

    party: str
    decision: str
    reason: str | None = None
    at: datetime | None = None


#: Where other parties' decisions come from (the coordinator's job view); None: not known here.
PartyDecisions = Callable[[str], list[PartyDecision]]


class ColumnInWords(BaseModel):
    """A column a request uses, with what this node knows of it."""

    name: str
    dtype: str | None = None
    grade: int | None = None
    category: str | None = None


class Difference(BaseModel):
    """One way a request differs from the requester's previous approved one."""

    field: str
    before: str
    after: str


def columns_in_words(approvals: ApprovalService, manifest: dict[str, Any]) -> list[tuple[str, list[ColumnInWords]]]:
    """Each input dataset of ``manifest`` with its columns' types, grades and categories."""
    out = []
    for inp in manifest.get("inputs", []):
        try:
            metas = {c.name: c for c in approvals.datasets.column_meta(inp["dataset"])}
        except NodeError:
            metas = {}
        cols = [
            ColumnInWords(name=c, dtype=metas[c].dtype, grade=metas[c].grade, category=metas[c].category)
            if c in metas else ColumnInWords(name=c)
            for c in inp["columns"]
        ]
        out.append((inp["dataset"], cols))
    return out


def code_texts(manifest: Any, path: str = "") -> list[tuple[str, str]]:
    """Every ``code`` text in the manifest, wherever its engine section (or the signed request's
    spec) carries one — a sandbox job's program, or any later kind's — as ``(where, text)``."""
    found: list[tuple[str, str]] = []
    if isinstance(manifest, dict):
        for key, value in manifest.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "code" and isinstance(value, str):
                found.append((where, value))
            else:
                found.extend(code_texts(value, where))
    elif isinstance(manifest, list):
        for i, value in enumerate(manifest):
            found.extend(code_texts(value, f"{path}[{i}]"))
    return found


def _columns(m: dict[str, Any]) -> dict[str, set[str]]:
    return {inp["dataset"]: set(inp["columns"]) for inp in m.get("inputs", [])}


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[Difference]:
    """How manifest ``after`` differs from ``before`` (kind, protocol, purpose, runs, columns per
    dataset — added with +, dropped with − —, receivers per output)."""
    out = []
    for key in ("kind", "protocol", "purpose", "max_runs"):
        if before.get(key) != after.get(key):
            out.append(Difference(field=key, before=str(before.get(key, "")), after=str(after.get(key, ""))))
    cb, ca = _columns(before), _columns(after)
    for ds in sorted(set(cb) | set(ca)):
        old, new = cb.get(ds, set()), ca.get(ds, set())
        if old != new:
            out.append(Difference(field="columns", before=f"{ds}: {', '.join(sorted(old))}",
                                  after=f"{ds}: {', '.join(sorted(new))}"
                                  + "".join(f" +{c}" for c in sorted(new - old))
                                  + "".join(f" −{c}" for c in sorted(old - new))))
    rb, ra = before.get("receivers", {}), after.get("receivers", {})
    for output in sorted(set(rb) | set(ra)):
        if sorted(rb.get(output, [])) != sorted(ra.get(output, [])):
            out.append(Difference(field="receivers", before=f"{output} → {', '.join(rb.get(output, []))}",
                                  after=f"{output} → {', '.join(ra.get(output, []))}"))
    return out


def previous_approved(approvals: ApprovalService, item: ApprovalRequestOut) -> ApprovalRecord | None:
    """The requester's latest approved request before ``item`` (one indexed query)."""
    with Session(approvals.engine) as s:
        q = (select(ApprovalRecord)
             .where(ApprovalRecord.requester == item.manifest.get("requester"), ApprovalRecord.status == "approved",
                    ApprovalRecord.id < item.id)
             .order_by(ApprovalRecord.id.desc()).limit(1))
        return s.exec(q).first()


def create_node_console(
    approvals: ApprovalService,
    officer: OfficerDependency = officer_login_required,
    decisions: PartyDecisions | None = None,
    page_size: int = 20,
    node: "NodeContext | None" = None,
    routes: Callable[[FastAPI, Console], None] | None = None,
) -> FastAPI:
    """The node console as an app (mounted on the node at ``/console``, or served at ``/`` by the
    console listener).

    ``officer`` is the login: a FastAPI dependency that returns the signed-in officer (or refuses).
    ``decisions`` gives every party's decision on a job, when something can tell. ``node`` (the
    node's context) adds the four-eyes queue, datasets, policy, audit and receipts pages; without it
    the console is the inbox alone. ``routes`` adds routes that need no officer (the sign-in).
    """
    console = Console(TITLE, NAV if node is not None else NAV[:1])
    console.env.globals.update(TABS=TABS, DECISIONS=DECISIONS, CHANGE_TABS=CHANGE_TABS, CHANGE_KINDS=CHANGE_KINDS,
                               DIFF_FIELDS=DIFF_FIELDS, LOGOUT=False)
    app = FastAPI(title="dcp node console", docs_url=None, redoc_url=None, openapi_url=None)
    mount_static(app)
    if routes is not None:
        routes(app, console)
    Officer = Annotated[ConsoleOfficer, Depends(officer)]

    def role(*wanted: str, why: str) -> Callable[..., ConsoleOfficer]:
        def dependency(who: Officer) -> ConsoleOfficer:
            if not set(wanted) & set(who.roles):
                raise HTTPException(status_code=403, detail=why)
            return who
        return dependency

    Approver = Annotated[ConsoleOfficer, Depends(role("approver", why="only an approver decides on requests"))]
    Steward = Annotated[ConsoleOfficer, Depends(role("steward", why="only a data steward proposes or confirms changes"))]
    Reader = Annotated[ConsoleOfficer, Depends(role(*AUDIT_ROLES, why="only an auditor or an admin reads the audit log"))]
    PageNo = Annotated[int, Query(alias="page", ge=1, le=1_000_000)]

    def actor(who: ConsoleOfficer) -> str:
        return getattr(who, "actor", who.name)

    def render(request: Request, template: str, who: ConsoleOfficer, status_code: int = 200, **context: Any) -> HTMLResponse:
        return console.render(request, template, status_code=status_code, officer=who,
                              node_name=node.settings.name if node is not None else None, **context)

    def back(request: Request, path: str) -> RedirectResponse:
        return RedirectResponse(request.scope.get("root_path", "").rstrip("/") + path, status_code=303)

    @app.get("/")
    def home(request: Request, who: Officer) -> Response:
        return back(request, "/inbox")

    # ------------------------------------------------------------ inbox

    @app.get("/inbox", response_class=HTMLResponse)
    def inbox(request: Request, who: Officer, status: Annotated[str, Query(max_length=20)] = "pending",
              page_no: PageNo = 1) -> HTMLResponse:
        counts = approvals.counts()  # the tabs' counts and the list come from one store: they agree
        everything = sum(counts.values())
        shown = None if status == "all" else status
        page = paginate_query(everything if shown is None else counts.get(shown, 0), page_no,
                              lambda offset, limit: approvals.page(shown, offset, limit), page_size)
        return console.render(request, "node/inbox.html", fragment="node/_inbox.html", officer=who,
                              node_name=node.settings.name if node is not None else None,
                              status=status, counts={s: counts.get(s, 0) for s in TABS}, total=everything,
                              page=page)

    def detail(request: Request, who: ConsoleOfficer, item: ApprovalRequestOut, error: str | None = None,
               status_code: int = 200) -> HTMLResponse:
        parties = None
        if decisions is not None:
            try:
                parties = decisions(item.job_id)
            except Exception:  # noqa: BLE001 - the coordinator may be away; the page still shows this node's
                parties = None
        prev = previous_approved(approvals, item)
        diff = differences(json.loads(prev.manifest_json), item.manifest) if prev is not None else None
        return render(request, "node/request.html", who, status_code=status_code, item=item,
                      m=item.manifest, inputs=columns_in_words(approvals, item.manifest),
                      codes=code_texts(item.manifest), previous=prev, diff=diff,
                      parties=parties, error=error, can_decide="approver" in who.roles)

    def load(request_id: int) -> ApprovalRequestOut:
        try:
            return approvals.get(request_id)
        except NodeError as exc:
            raise HTTPException(status_code=exc.status_code, detail=exc.detail) from exc

    @app.get("/inbox/{request_id}", response_class=HTMLResponse)
    def request_page(request: Request, request_id: int, who: Officer) -> HTMLResponse:
        return detail(request, who, load(_bounded(request_id)))

    @app.post("/inbox/{request_id}/approve", response_class=HTMLResponse, dependencies=[Depends(same_origin)])
    def approve(request: Request, request_id: int, who: Approver) -> Response:
        item = load(_bounded(request_id))
        try:
            approvals.approve(request_id, actor=actor(who))
        except NodeError as exc:
            return detail(request, who, item, error=exc.detail, status_code=exc.status_code)
        return RedirectResponse(str(request.url_for("request_page", request_id=request_id)), status_code=303)

    @app.post("/inbox/{request_id}/reject", response_class=HTMLResponse, dependencies=[Depends(same_origin)])
    def reject(request: Request, request_id: int, who: Approver,
               reason: Annotated[str, Form(max_length=2000)] = "") -> Response:
        item = load(_bounded(request_id))
        if not reason.strip():
            return detail(request, who, item, error="reason_required", status_code=422)
        try:
            approvals.reject(request_id, reason.strip(), actor=actor(who))
        except NodeError as exc:
            return detail(request, who, item, error=exc.detail, status_code=exc.status_code)
        return RedirectResponse(str(request.url_for("request_page", request_id=request_id)), status_code=303)

    if node is not None:
        _node_pages(app, node, render, back, Officer, Steward, Reader, PageNo, page_size, actor)
    return app


def _bounded(n: int) -> int:
    """A request id SQLite can hold (anything else is simply not there)."""
    if not 1 <= n <= 2**62:
        raise HTTPException(status_code=404, detail="no such request")
    return n


def _node_pages(app: FastAPI, node: "NodeContext", render: Any, back: Any, Officer: Any, Steward: Any,
                Reader: Any, PageNo: Any, page_size: int, actor: Callable[[ConsoleOfficer], str]) -> None:
    """The pages beyond the inbox: four-eyes queue, datasets, policy, audit log, receipts."""
    from nodes.models import ColumnEdit, Policy, SchemaEdit
    from nodes.services.officers import ChangeProposal, OfficerIdentity

    def expire_overdue_changes() -> None:
        """Mark overdue pending proposals expired (the service looks without the writer lock and
        writes only when some are due)."""
        node.officers.expire_overdue()

    def pending_changes(kind: str, target: str) -> list[Any]:
        expire_overdue_changes()
        with Session(node.engine) as s:
            q = (select(ChangeProposal).where(ChangeProposal.status == "pending", ChangeProposal.kind == kind,
                                              ChangeProposal.target == target).order_by(ChangeProposal.id))
            return [node.officers._pout(p) for p in s.exec(q)]

    def identity(who: ConsoleOfficer) -> OfficerIdentity:
        ident = getattr(who, "identity", None)
        if isinstance(ident, OfficerIdentity):
            return ident
        return OfficerIdentity(name=who.name, roles=sorted(who.roles), node=node.settings.name, session="console")

    # ------------------------------------------------------------ the four-eyes queue

    def proposal_words(p: Any, memo: dict[str, Any] | None = None) -> list[Difference]:
        """What a proposal changes, against what is in force now (``memo``: what one page already read)."""
        memo = {} if memo is None else memo
        if p.kind == "policy":
            if "policy" not in memo:
                memo["policy"] = node.policy.current().model_dump(mode="json")
            now = memo["policy"]
            return [Difference(field=k, before=json.dumps(now.get(k), ensure_ascii=False),
                               after=json.dumps(v, ensure_ascii=False))
                    for k, v in p.body.items() if now.get(k) != v]
        key = f"dataset:{p.target}"
        if key not in memo:
            try:
                memo[key] = {c.name: c for c in node.datasets.get(p.target).columns}
            except NodeError:
                memo[key] = {}
        cols = memo[key]
        out = []
        for c in p.body.get("columns", []):
            old = cols.get(c["name"])
            for k, v in c.items():
                if k == "name":
                    continue
                out.append(Difference(field=f"{c['name']}.{k}", before="" if old is None else str(getattr(old, k, "")),
                                      after=str(v)))
        return out

    @app.get("/changes", response_class=HTMLResponse)
    def changes(request: Request, who: Officer, page_no: PageNo = 1,
                status: Annotated[str, Query(pattern="^(pending|confirmed|cancelled|expired)$")] = "pending",
                ) -> HTMLResponse:
        expire_overdue_changes()
        with Session(node.engine) as s:
            counts = dict(s.exec(select(ChangeProposal.status, func.count()).group_by(ChangeProposal.status)).all())

            def fetch(offset: int, limit: int) -> list[Any]:
                q = (select(ChangeProposal).where(ChangeProposal.status == status)
                     .order_by(ChangeProposal.id.desc()).offset(offset).limit(limit))
                return [node.officers._pout(p) for p in s.exec(q)]

            page = paginate_query(counts.get(status, 0), page_no, fetch, page_size)
        return render(request, "node/changes.html", who, page=page, status=status,
                      counts={k: counts.get(k, 0) for k in CHANGE_TABS},
                      words={p.id: proposal_words(p, memo) for memo in [{}] for p in page.items})

    def change_page(request: Request, who: ConsoleOfficer, proposal_id: int, error: str | None = None,
                    status_code: int = 200) -> HTMLResponse:
        try:
            p = node.officers.proposal(_bounded(proposal_id))
        except NodeError as exc:
            raise HTTPException(status_code=exc.status_code, detail=exc.detail) from exc
        return render(request, "node/change.html", who, status_code=status_code, p=p, words=proposal_words(p),
                      error=error, can_confirm="steward" in who.roles and p.proposed_by != who.name,
                      can_cancel="steward" in who.roles)

    @app.get("/changes/{proposal_id}", response_class=HTMLResponse)
    def change(request: Request, proposal_id: int, who: Officer) -> HTMLResponse:
        return change_page(request, who, proposal_id)

    @app.post("/changes/{proposal_id}/confirm", response_class=HTMLResponse, dependencies=[Depends(same_origin)])
    def confirm(request: Request, proposal_id: int, who: Steward) -> Response:
        """The second steward confirms: the change is applied, both officers in the audit log."""
        me = identity(who)
        try:
            p = node.officers.pending_for_confirmation(_bounded(proposal_id), me)
            by = f"officer:{p.proposed_by}@{node.settings.name} confirmed by {actor(who)}"
            if p.kind == "policy":
                node.policy.set(Policy.model_validate(p.body), by, source=f"proposal {p.id}")
            else:
                node.datasets.edit_schema(p.target, SchemaEdit.model_validate(p.body), by)
            node.officers.close(p.id, "confirmed", me)
        except NodeError as exc:
            return change_page(request, who, proposal_id, error=exc.detail, status_code=exc.status_code)
        return back(request, f"/changes/{proposal_id}")

    @app.post("/changes/{proposal_id}/cancel", response_class=HTMLResponse, dependencies=[Depends(same_origin)])
    def cancel(request: Request, proposal_id: int, who: Steward) -> Response:
        try:
            node.officers.close(_bounded(proposal_id), "cancelled", identity(who))
        except NodeError as exc:
            return change_page(request, who, proposal_id, error=exc.detail, status_code=exc.status_code)
        node.audit.record(actor=actor(who), action="proposal.cancel", target=f"proposal {proposal_id}")
        return back(request, f"/changes/{proposal_id}")

    # ------------------------------------------------------------ datasets

    @app.get("/datasets", response_class=HTMLResponse)
    def datasets(request: Request, who: Officer, page_no: PageNo = 1) -> HTMLResponse:
        from console.web import paginate

        page = paginate(node.datasets.list(), page_no, page_size)
        return render(request, "node/datasets.html", who, page=page)

    def dataset_page(request: Request, who: ConsoleOfficer, name: str, error: str | None = None,
                     status_code: int = 200) -> HTMLResponse:
        try:
            ds = node.datasets.get(name[:128])
        except NodeError as exc:
            raise HTTPException(status_code=exc.status_code, detail=exc.detail) from exc
        try:
            quality = node.datasets.quality_report(ds.name)
        except NodeError:
            quality = None
        pending = pending_changes("schema", ds.name)
        return render(request, "node/dataset.html", who, status_code=status_code, ds=ds, quality=quality,
                      pending=pending, error=error, can_propose="steward" in who.roles)

    @app.get("/datasets/{name}", response_class=HTMLResponse)
    def dataset(request: Request, name: str, who: Officer) -> HTMLResponse:
        return dataset_page(request, who, name)

    @app.post("/datasets/{name}/grades", response_class=HTMLResponse, dependencies=[Depends(same_origin)])
    def propose_grade(request: Request, name: str, who: Steward,
                      column: Annotated[str, Form(min_length=1, max_length=128)],
                      grade: Annotated[int, Form(ge=1, le=4)],
                      category: Annotated[str, Form(max_length=64)] = "") -> Response:
        """A steward proposes a column's grade (and category); a second steward confirms it."""
        try:
            ds = node.datasets.get(name[:128])
        except NodeError as exc:
            raise HTTPException(status_code=exc.status_code, detail=exc.detail) from exc
        if column not in {c.name for c in ds.columns}:
            return dataset_page(request, who, name, error="unknown_column", status_code=422)
        edit = ColumnEdit(name=column, grade=grade, **({"category": category.strip()} if category.strip() else {}))
        body = SchemaEdit(columns=[edit]).model_dump(mode="json", exclude_unset=True)
        p = node.officers.propose("schema", ds.name, body, identity(who))
        node.audit.record(actor=actor(who), action="dataset.schema.propose", target=ds.name,
                          detail={"proposal": p.id, "edit": p.body})
        return back(request, f"/changes/{p.id}")

    # ------------------------------------------------------------ policy

    def policy_page(request: Request, who: ConsoleOfficer, error: str | None = None,
                    status_code: int = 200) -> HTMLResponse:
        pending = pending_changes("policy", "policy")
        return render(request, "node/policy.html", who, status_code=status_code, policy=node.policy.current(),
                      pending=pending, error=error, can_propose="steward" in who.roles)

    @app.get("/policy", response_class=HTMLResponse)
    def policy(request: Request, who: Officer) -> HTMLResponse:
        return policy_page(request, who)

    def _list(text: str) -> list[str]:
        return [x.strip() for x in text.replace("，", ",").split(",") if x.strip()]

    @app.post("/policy", response_class=HTMLResponse, dependencies=[Depends(same_origin)])
    def propose_policy(request: Request, who: Steward,
                       default_max_grade: Annotated[int, Form(ge=0, le=4)],
                       min_group_size: Annotated[int, Form(ge=1, le=1_000_000)],
                       negative_list: Annotated[str, Form(max_length=2000)] = "",
                       allowed_requesters: Annotated[str, Form(max_length=2000)] = "",
                       allowed_roles: Annotated[str, Form(max_length=2000)] = "") -> Response:
        """A steward proposes a new policy (the rest of it unchanged); a second steward confirms."""
        body = node.policy.current().model_dump(mode="json", exclude={"version", "updated_at"})
        body.update(default_max_grade=default_max_grade, min_group_size=min_group_size,
                    negative_list=_list(negative_list), allowed_requesters=_list(allowed_requesters),
                    allowed_roles=_list(allowed_roles))
        try:
            checked = Policy.model_validate(body)
        except ValidationError as exc:
            return policy_page(request, who, error="; ".join(e["msg"] for e in exc.errors()[:3]), status_code=422)
        p = node.officers.propose("policy", "policy", checked.model_dump(mode="json"), identity(who))
        node.audit.record(actor=actor(who), action="policy.propose", target=f"proposal {p.id}",
                          detail={"policy": p.body})
        return back(request, f"/changes/{p.id}")

    # ------------------------------------------------------------ audit log

    @app.get("/audit", response_class=HTMLResponse)
    def audit(request: Request, who: Reader, page_no: PageNo = 1,
              verify: Annotated[int, Query(ge=0, le=1)] = 0) -> HTMLResponse:
        with Session(node.engine) as s:
            total = s.exec(select(func.count()).select_from(AuditEntry)).one()

            def fetch(offset: int, limit: int) -> list[Any]:
                from nodes.services.audit import _to_out

                q = select(AuditEntry).order_by(AuditEntry.seq.desc()).offset(offset).limit(limit)
                return [_to_out(e) for e in s.exec(q)]

            page = paginate_query(total, page_no, fetch, page_size)
            anchors = s.exec(select(AuditAnchorRecord).order_by(AuditAnchorRecord.seq.desc()).limit(10)).all()
        on_chain = None
        if node.audit.anchor_backend is not None:
            try:
                on_chain = node.audit.anchor_backend.latest(node.settings.name)
            except Exception:  # noqa: BLE001 - the chain may be away; the page says so
                on_chain = "unreadable"
        return render(request, "node/audit.html", who, page=page, head=node.audit.head(),
                      result=node.audit.verify() if verify else None, anchors=anchors, on_chain=on_chain,
                      chain_wired=node.chain is not None)

    # ------------------------------------------------------------ receipts

    @app.get("/receipts", response_class=HTMLResponse)
    def receipts(request: Request, who: Officer, page_no: PageNo = 1) -> HTMLResponse:
        with Session(node.engine) as s:
            where = NodeTask.receipt_tx.is_not(None)  # type: ignore[union-attr]
            total = s.exec(select(func.count()).select_from(NodeTask).where(where)).one()

            def fetch(offset: int, limit: int) -> list[Any]:
                q = select(NodeTask).where(where).order_by(NodeTask.id.desc()).offset(offset).limit(limit)
                return [(t, json.loads(t.datasets_json or "[]")) for t in s.exec(q)]

            page = paginate_query(total, page_no, fetch, page_size)
        return render(request, "node/receipts.html", who, page=page)


def coordinator_decisions(ctx: "NodeContext") -> PartyDecisions | None:
    """Each party's decision from the coordinator's view of the job (over the node's own 国密 TLS
    client to the coordinator), when the node knows a coordinator."""
    recorder = ctx.approvals.recorder
    url = getattr(recorder, "coordinator_url", None)
    if not url:
        return None

    def decisions(job_id: str) -> list[PartyDecision]:
        import httpx

        http = getattr(recorder, "http", None) or httpx
        r = http.get(f"{url}/jobs/{job_id}", timeout=5)
        r.raise_for_status()
        return [PartyDecision(party=k, decision=str(v)) for k, v in sorted(r.json().get("approvals", {}).items())]

    return decisions


#: The navigation's link to the requester console (mounted on a bank's node), for its analysts.
REQUESTER_NAV = NavItem("/requester/jobs", N_("Requester console"), roles=frozenset({"analyst"}))


def create_officer_console(ctx: "NodeContext", page_size: int = 20,
                           requester: Callable[[OfficerDependency], FastAPI] | None = None) -> FastAPI:
    """The node console with officers' sign-in (password + TOTP, :mod:`console.node.auth`), as the
    node's console listener serves it.

    ``requester``: on a bank's node, makes the requester console (:mod:`console.requester`) over a
    given ``officer`` dependency; it is mounted at ``/requester`` behind this same sign-in (its pages
    send an officer without a session to this console's login, and back), and the navigation links
    to it for officers with the ``analyst`` role."""
    from urllib.parse import quote

    from console.node.auth import COOKIE, ConsoleLogin, LoginRefused, safe_next
    from console.node.totp import SecondFactor

    login = ConsoleLogin(ctx.officers, SecondFactor(ctx.engine, f"dcp {ctx.settings.name}"), ctx.audit)

    def sign_in_routes(app: FastAPI, console: Console) -> None:
        console.env.globals["LOGOUT"] = True
        def page(request: Request, nxt: str, error: str | None = None, status_code: int = 200) -> HTMLResponse:
            return console.render(request, "node/login.html", status_code=status_code, officer=None,
                                  node_name=ctx.settings.name, next=nxt, error=error)

        @app.get("/login", response_class=HTMLResponse)
        def login_form(request: Request, next: Annotated[str, Query(max_length=2000)] = "") -> HTMLResponse:  # noqa: A002
            """Anyone: the sign-in form."""
            return page(request, safe_next(next, request.scope.get("root_path", "").rstrip("/")))

        @app.post("/login", response_class=HTMLResponse, dependencies=[Depends(same_origin)])
        def login_post(request: Request, name: Annotated[str, Form(max_length=64)] = "",
                       password: Annotated[str, Form(max_length=1024)] = "",
                       code: Annotated[str, Form(max_length=16)] = "",
                       next: Annotated[str, Form(max_length=2000)] = "") -> Response:  # noqa: A002
            """Anyone: name + password + one-time code → a session cookie, then the page asked for."""
            root = request.scope.get("root_path", "").rstrip("/")
            target = safe_next(next, root)
            client = request.client.host if request.client else "?"
            try:
                token = login.sign_in(name, password, code, client)
            except LoginRefused as exc:
                return page(request, target, error="locked" if exc.locked else "refused",
                            status_code=429 if exc.locked else 401)
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(COOKIE, token, secure=True, httponly=True, samesite="strict", path="/")
            return response

        @app.post("/logout", dependencies=[Depends(same_origin)])
        def logout(request: Request, who: Annotated[Any, Depends(login.officer)]) -> Response:
            """A signed-in officer: ends the session (on the node, not just in the browser)."""
            login.sign_out(who)
            root = request.scope.get("root_path", "").rstrip("/")
            response = RedirectResponse(f"{root}/login?next={quote(root + '/', safe='')}", status_code=303)
            response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
            return response

    def routes(app: FastAPI, console: Console) -> None:
        sign_in_routes(app, console)
        if requester is not None:
            console.nav.append(REQUESTER_NAV)
            app.mount("/requester", requester(login.officer_for("")))

    return create_node_console(ctx.approvals, officer=login.officer, decisions=coordinator_decisions(ctx),
                               page_size=page_size, node=ctx, routes=routes)
