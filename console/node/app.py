"""The node console's pages (skeleton): a department officer's inbox — the requests, tabbed by
status with their counts; each request's manifest in words (who asks, purpose, which columns at
which grade, what leaves and to whom, expiry, runs); this node's decision and each party's
decision so far; approve, or reject with a reason.

Mounted on the node's app as a sub-application (``app.mount("/console", create_node_console(…))``);
every link is relative to where it is mounted. Pages read the node's own
:class:`nodes.services.approvals.ApprovalService` (``counts`` / ``page`` / ``get``); decisions go through its
``approve`` / ``reject`` with the officer's name as the actor.
"""


from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel

from console.i18n import N_
from console.node.deps import ConsoleOfficer, OfficerDependency, officer_login_required, same_origin
from console.web import Console, NavItem, mount_static, paginate_query
from nodes.errors import NodeError
from nodes.models import ApprovalRequestOut
from nodes.services.approvals import ApprovalService

TITLE = N_("dcp node console")
NAV = [NavItem("/inbox", N_("Inbox"))]
#: The inbox's tabs: status → label (None: every request).
TABS: dict[str, str] = {
    "pending": N_("Pending"), "approved": N_("Approved"), "rejected": N_("Rejected"), "expired": N_("Expired"),
}
DECISIONS = {"pending": N_("pending"), "approved": N_("approved"), "rejected": N_("rejected"),
             "expired": N_("expired")}


class PartyDecision(BaseModel):
    """One party's decision on a job, as far as this node knows."""

    party: str
    decision: str
    reason: str | None = None
    at: datetime | None = None


#: Where other parties' decisions come from (the coordinator's job view or the chain's Approved
#: events); not wired yet, so the page shows this node's own decision only.
PartyDecisions = Callable[[str], list[PartyDecision]]


class ColumnInWords(BaseModel):
    """A column a request uses, with what this node knows of it."""

    name: str
    dtype: str | None = None
    grade: int | None = None
    category: str | None = None


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


def create_node_console(
    approvals: ApprovalService,
    officer: OfficerDependency = officer_login_required,
    decisions: PartyDecisions | None = None,
    page_size: int = 20,
) -> FastAPI:
    """The node console as an app to mount on the node (``/console``).

    ``officer`` is the login: a FastAPI dependency that returns the signed-in officer (or refuses).
    ``decisions`` gives every party's decision on a job, when something can tell.
    """
    console = Console(TITLE, NAV)
    console.env.globals.update(TABS=TABS, DECISIONS=DECISIONS)
    app = FastAPI(title="dcp node console", docs_url=None, redoc_url=None, openapi_url=None)
    mount_static(app)
    Officer = Annotated[ConsoleOfficer, Depends(officer)]

    def approver(who: Officer) -> ConsoleOfficer:
        if "approver" not in who.roles:
            raise HTTPException(status_code=403, detail="only an approver decides on requests")
        return who

    Approver = Annotated[ConsoleOfficer, Depends(approver)]

    @app.get("/")
    def home(request: Request, who: Officer) -> Response:
        return RedirectResponse(request.scope.get("root_path", "").rstrip("/") + "/inbox", status_code=303)

    @app.get("/inbox", response_class=HTMLResponse)
    def inbox(request: Request, who: Officer, status: Annotated[str, Query(max_length=20)] = "pending",
              page_no: Annotated[int, Query(alias="page", ge=1, le=1_000_000)] = 1) -> HTMLResponse:
        counts = approvals.counts()  # the tabs' counts and the list come from one store: they agree
        everything = sum(counts.values())
        shown = None if status == "all" else status
        page = paginate_query(everything if shown is None else counts.get(shown, 0), page_no,
                              lambda offset, limit: approvals.page(shown, offset, limit), page_size)
        return console.render(request, "node/inbox.html", fragment="node/_inbox.html", officer=who,
                              status=status, counts={s: counts.get(s, 0) for s in TABS}, total=everything,
                              page=page)

    def detail(request: Request, who: ConsoleOfficer, item: ApprovalRequestOut, error: str | None = None,
               status_code: int = 200) -> HTMLResponse:
        parties = decisions(item.job_id) if decisions is not None else None
        return console.render(request, "node/request.html", status_code=status_code, officer=who, item=item,
                              m=item.manifest, inputs=columns_in_words(approvals, item.manifest),
                              parties=parties, error=error, can_decide="approver" in who.roles)

    def load(request_id: int) -> ApprovalRequestOut:
        try:
            return approvals.get(request_id)
        except NodeError as exc:
            raise HTTPException(status_code=exc.status_code, detail=exc.detail) from exc

    @app.get("/inbox/{request_id}", response_class=HTMLResponse)
    def request_page(request: Request, request_id: int, who: Officer) -> HTMLResponse:
        return detail(request, who, load(request_id))

    @app.post("/inbox/{request_id}/approve", response_class=HTMLResponse,
              dependencies=[Depends(same_origin)])
    def approve(request: Request, request_id: int, who: Approver) -> Response:
        item = load(request_id)
        try:
            approvals.approve(request_id, actor=who.name)
        except NodeError as exc:
            return detail(request, who, item, error=exc.detail, status_code=exc.status_code)
        return RedirectResponse(str(request.url_for("request_page", request_id=request_id)), status_code=303)

    @app.post("/inbox/{request_id}/reject", response_class=HTMLResponse,
              dependencies=[Depends(same_origin)])
    def reject(request: Request, request_id: int, who: Approver,
               reason: Annotated[str, Form(max_length=2000)] = "") -> Response:
        item = load(request_id)
        if not reason.strip():
            return detail(request, who, item, error="reason_required", status_code=422)
        try:
            approvals.reject(request_id, reason.strip(), actor=who.name)
        except NodeError as exc:
            return detail(request, who, item, error=exc.detail, status_code=exc.status_code)
        return RedirectResponse(str(request.url_for("request_page", request_id=request_id)), status_code=303)

    return app
