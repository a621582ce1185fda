"""The requester's console (a bank's node): the coordinator's catalog, searchable; a job form built
from the job templates whose errors (the coordinator's own) appear next to their field; each job's
live progress (htmx polling) with every party's decision and stage, and the reason when it ends
badly; the bank's jobs, filterable and paginated; a training job's report — ROC, KS, score bands,
PSI, white list and watch list — from the output the bank's key opens here, on the bank's node.

Mounted on the bank node's console listener (``app.mount("/requester", create_requester_console(…))``);
every link is relative to where it is mounted. Who may call: every route takes the ``officer``
dependency (the node console's login, :mod:`console.node.deps`) and requires the ``analyst`` role;
the one form POST also requires the console's own origin (:func:`console.node.deps.same_origin`).
"""


import threading
from collections import OrderedDict
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console import i18n
from console.i18n import N_, gettext
from console.node.deps import ConsoleOfficer, OfficerDependency, officer_login_required, same_origin
from console.requester.desk import RequesterDesk, ResultUnavailable
from console.requester.forms import ALGORITHMS, TEMPLATES, JobForm, error_field
from console.requester.report import (
    WATCH_MIN_PD,
    WHITE_MAX_PD,
    JobReport,
    ReportError,
    bands_svg,
    build_report,
    ks_svg,
    points_of,
    psi_svg,
    roc_svg,
)
from console.web import Console, NavItem, mount_static, paginate, request_locale
from coordinator.errors import CoordinatorError, JobNotFound
from coordinator.models import TERMINAL, JobState

TITLE = N_("dcp requester console")
NAV = [NavItem("/jobs", N_("Jobs")), NavItem("/new", N_("New job")), NavItem("/catalog", N_("Catalog"))]
STATES: dict[str, str] = {
    "SUBMITTED": N_("Submitted"), "PENDING_APPROVAL": N_("Waiting for approvals"), "AUTHORIZED": N_("Authorized"),
    "RUNNING": N_("Running"), "SUCCEEDED": N_("Succeeded"), "REJECTED": N_("Rejected"), "EXPIRED": N_("Expired"),
    "REVOKED": N_("Withdrawn"), "FAILED": N_("Failed"),
}
DECISIONS = {"pending": N_("pending"), "approved": N_("approved"), "rejected": N_("rejected"),
             "expired": N_("expired")}
TASKS = {"new": N_("not started"), "ports": N_("starting"), "running": N_("running"), "succeeded": N_("done"),
         "failed": N_("failed"), "stopped": N_("stopped")}
JobIdPath = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:-]+$")]
Text = Annotated[str | None, Query(max_length=200)]
PageNo = Annotated[int, Query(alias="page", ge=1, le=1_000_000)]
Pd = Annotated[float, Query(ge=0.0, le=1.0)]
CHARTS = {"roc": roc_svg, "ks": ks_svg, "bands": bands_svg, "psi": psi_svg}


class _Recent:
    """The last few things made from an output opened with the bank's key (the output itself, its
    report, its charts), kept in this process's memory only: the report's page, its four charts
    and its downloads open the output once."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any, load: Any) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        data = load()
        with self._lock:
            self._items[key] = data
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return data


def create_requester_console(
    desk: RequesterDesk,
    officer: OfficerDependency = officer_login_required,
    page_size: int = 20,
    poll_s: float = 1.0,
) -> FastAPI:
    """The requester's console as an app to mount on the bank's node (``/requester``).

    ``desk``: the bank's coordinator client and keys (:class:`RequesterDesk`); ``officer``: the login
    (a FastAPI dependency returning the signed-in officer, or refusing)."""
    console = Console(TITLE, NAV)
    console.env.globals.update(STATES=STATES, DECISIONS=DECISIONS, TASKS=TASKS, TEMPLATES=TEMPLATES,
                               ALGORITHMS=ALGORITHMS, member=desk.member)
    app = FastAPI(title="dcp requester console", docs_url=None, redoc_url=None, openapi_url=None)
    mount_static(app)
    Officer = Annotated[ConsoleOfficer, Depends(officer)]
    recent = _Recent()

    def analyst(who: Officer) -> ConsoleOfficer:
        if "analyst" not in who.roles:
            raise HTTPException(status_code=403, detail="only the bank's analysts use the requester console")
        return who

    Analyst = Annotated[ConsoleOfficer, Depends(analyst)]

    def load_job(job_id: str) -> Any:
        try:
            job = desk.job(job_id)
        except JobNotFound:
            raise HTTPException(status_code=404, detail="no such job") from None
        if job.requester != desk.member:  # another member's job is not this console's business
            raise HTTPException(status_code=404, detail="no such job")
        return job

    @app.get("/")
    def home(request: Request, who: Analyst) -> Response:
        return RedirectResponse(request.scope.get("root_path", "").rstrip("/") + "/jobs", status_code=303)

    # ---------------------------------------------------------------- catalog

    @app.get("/catalog", response_class=HTMLResponse)
    def catalog(request: Request, who: Analyst, q: Text = None, member: Text = None, page_no: PageNo = 1) -> HTMLResponse:
        rows = desk.catalog(q, member)
        owners = sorted({r["member"] for r in desk.catalog()})
        return console.render(request, "requester/catalog.html", fragment="requester/_catalog.html", officer=who,
                              q=q or "", member_filter=member or "", owners=owners,
                              page=paginate(rows, page_no, page_size))

    # ---------------------------------------------------------------- jobs

    @app.get("/jobs", response_class=HTMLResponse)
    def jobs(request: Request, who: Analyst, state: Annotated[str | None, Query(max_length=32)] = None,
             q: Text = None, page_no: PageNo = 1) -> HTMLResponse:
        shown = state if state in STATES else None
        page = desk.jobs(shown, q, page_no, page_size)  # only this page leaves the coordinator
        return console.render(request, "requester/jobs.html", fragment="requester/_jobs.html", officer=who,
                              state=shown or "", q=q or "", page=page)

    def form_page(request: Request, who: ConsoleOfficer, form: JobForm, errors: dict[str, str] | None = None,
                  status_code: int = 200) -> HTMLResponse:
        entries = desk.catalog()
        return console.render(request, "requester/new.html", status_code=status_code, officer=who, form=form,
                              errors=errors or {}, entries=entries)

    @app.get("/new", response_class=HTMLResponse)
    def new_job(request: Request, who: Analyst, kind: Annotated[str, Query(max_length=32)] = "vertical_train",
                dataset: Annotated[list[str] | None, Query(max_length=50)] = None) -> HTMLResponse:
        form = JobForm.blank(kind)
        form.datasets = list(dataset or [])
        # a dataset ticked brings every column it publishes; the analyst unticks what the job does not need
        form.columns = {f"{e['member']}/{e['dataset']}": [c["name"] for c in e["columns"] if c["name"] != e["key_column"]]
                        for e in desk.catalog()}
        return form_page(request, who, form)

    @app.post("/new", response_class=HTMLResponse, dependencies=[Depends(same_origin)])
    async def submit(request: Request, who: Analyst) -> Response:
        form = JobForm.from_form(await request.form())
        spec, errors = form.to_spec(desk.member)
        if errors:
            return form_page(request, who, form, {k: gettext(v) for k, v in errors.items()}, 422)
        try:
            job_id = desk.submit(spec)
        except CoordinatorError as exc:  # the coordinator's own refusal, next to the field it names
            detail = getattr(exc, "remote_detail", None) or str(exc)
            status = getattr(exc, "status_code", 422)
            return form_page(request, who, form, {error_field(detail): detail}, status if status >= 400 else 422)
        root = request.scope.get("root_path", "").rstrip("/")
        return RedirectResponse(f"{root}/jobs/{job_id}", status_code=303)

    def job_context(job: Any) -> dict[str, Any]:
        parties = sorted(set(job.approvals) | set(job.tasks))
        return {"job": job, "parties": parties, "final": job.state in TERMINAL, "poll_s": poll_s,
                "regulator_link": desk.regulator_link(job.job_id),
                "has_report": job.state == JobState.SUCCEEDED and job.kind == "vertical_train"}

    @app.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job_page(request: Request, job_id: JobIdPath, who: Analyst) -> HTMLResponse:
        return console.render(request, "requester/job.html", officer=who, **job_context(load_job(job_id)))

    @app.get("/jobs/{job_id}/progress", response_class=HTMLResponse)
    def progress(request: Request, job_id: JobIdPath, who: Analyst) -> HTMLResponse:
        """The live part of the job page (htmx polls it until the job is final)."""
        return console.render(request, "requester/_progress.html", officer=who, **job_context(load_job(job_id)))

    # ---------------------------------------------------------------- report

    def report_of(job_id: str, white: float, watch: float) -> JobReport:
        job = load_job(job_id)
        if job.state != JobState.SUCCEEDED or job.kind != "vertical_train":
            raise HTTPException(status_code=409, detail="only a succeeded training job has a report")
        try:
            data = recent.get(("output", job_id), lambda: desk.result(job_id, "predictions"))
            return recent.get(("report", job_id, white, watch), lambda: build_report(data, white, watch))
        except (ResultUnavailable, ReportError) as exc:
            raise HTTPException(status_code=502, detail=str(exc)) from None

    @app.get("/jobs/{job_id}/report", response_class=HTMLResponse)
    def report(request: Request, job_id: JobIdPath, who: Analyst, white: Pd = WHITE_MAX_PD,
               watch: Pd = WATCH_MIN_PD) -> HTMLResponse:
        rep = report_of(job_id, white, watch)
        return console.render(request, "requester/report.html", officer=who, job=load_job(job_id), rep=rep,
                              s=rep.summary, n_white=len(rep.white_list()), n_watch=len(rep.watch_list()),
                              ks_points=points_of(rep.summary.ks_threshold_pd))

    @app.get("/jobs/{job_id}/report/{chart}.svg")
    def chart(request: Request, job_id: JobIdPath, chart: Annotated[str, Path(pattern="^(roc|ks|bands|psi)$")],
              who: Analyst) -> Response:
        rep = report_of(job_id, WHITE_MAX_PD, WATCH_MIN_PD)
        locale = request_locale(request)
        with i18n.use_locale(locale):
            labels = {k: gettext(v) for k, v in CHART_LABELS.items()}
        svg = recent.get(("chart", job_id, chart, locale), lambda: CHARTS[chart](rep, labels))
        return Response(svg, media_type="image/svg+xml",
                        headers={"Cache-Control": "private, no-store"})

    @app.get("/jobs/{job_id}/report/{which}.csv")
    def download(job_id: JobIdPath, which: Annotated[str, Path(pattern="^(white|watch)-list$")], who: Analyst,
                 white: Pd = WHITE_MAX_PD, watch: Pd = WATCH_MIN_PD) -> Response:
        rep = report_of(job_id, white, watch)
        frame = rep.white_list() if which == "white-list" else rep.watch_list()
        return Response(frame.to_csv(index=False), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{job_id}-{which}.csv"',
                                 "Cache-Control": "private, no-store"})

    return app


CHART_LABELS = {
    "fpr": N_("False positive rate"), "tpr": N_("True positive rate"), "bads": N_("Defaulters (cumulative)"),
    "goods": N_("Non-defaulters (cumulative)"), "share": N_("Share of applicants, riskiest first"),
    "cumulative": N_("Cumulative share"), "points": N_("Scorecard points"), "rate": N_("Default rate (%)"),
    "train": N_("Training rows"), "test": N_("Hold-out rows"), "bin": N_("Score bin"), "share_pct": N_("Share (%)"),
}
