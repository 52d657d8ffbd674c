"""The status dashboard: the overview page of section 9, read from the engine's state file.

Server-rendered with no JavaScript, so that it works through an ssh tunnel in any browser
and has nothing to build. It shows; the one thing it starts is a read-only diagnosis,
so `POST /diagnose` is its only route that is not a GET.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ..errors import RunbookError
from ..runs import Session, walk
from ..store import Store
from ._report import report_html, with_nav
from ._reports import dark_reports, inside
from ._views import SlurmSource, ago, health_view, slurm_panel, utc

__all__ = ["create_app", "diagnoses"]

_TEMPLATES = Path(__file__).parent / "templates"
_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
# A report folder's files are shown as they are, each in an origin of its own.
_FILE_HEADERS = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}


def diagnoses(session: Session) -> list[dict[str, str]]:
    """The runbooks the form offers: ready diagnoses that need nothing but the instrument,
    since the form asks for nothing else."""
    out = []
    for rid, loaded in sorted(session.catalog.runbooks.items()):
        rb = loaded.runbook
        if rb.kind != "diagnosis" or rb.status != "ready":
            continue
        if any(p.type != "instrument" and p.required and p.default is None
               for p in rb.params.values()):
            continue
        out.append({"id": rid, "title": rb.title, "source": rb.source})
    return out


class _Sessions:
    """Load the catalog and inventory once, on first use: checking every runbook takes a
    while, and a site that fails to load should leave the rest of the page working."""

    def __init__(self, loader: Callable[[], Session]) -> None:
        self._loader, self._lock = loader, threading.Lock()
        self._session: Session | None = None

    def get(self) -> tuple[Session | None, str]:
        with self._lock:
            if self._session is None:
                try:
                    self._session = self._loader()
                except RunbookError as exc:
                    return None, str(exc)
            return self._session, ""


class _Dashboard:
    def __init__(self, store: Store, sessions: _Sessions, reports: Path | None,
                 slurm: SlurmSource | None, limits: dict[str, int]) -> None:
        self.store, self.sessions, self.reports, self.slurm = store, sessions, reports, slurm
        self.limits = limits
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES),
                                      autoescape=True, undefined=jinja2.StrictUndefined)
        self.env.filters.update(utc=utc, ago=ago, quote=lambda s: quote(str(s), safe="/"))

    def page(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(base=request.scope.get("root_path", ""),
                                                  now=time.time(), **ctx)
        return HTMLResponse(html, status, headers={"Content-Security-Policy": _CSP,
                                                   "Referrer-Policy": "same-origin"})

    def error(self, request: Request, status: int, title: str, message: str) -> HTMLResponse:
        return self.page(request, "error.html", status, title=title, message=message)

    def index(self, request: Request) -> Response:
        session, problem = self.sessions.get()
        site = session.inventory.name if session else None
        names = session.inventory.instrument_names() if session else []
        return self.page(
            request, "index.html", site=site, session_problem=problem,
            cards=health_view(self.store.latest_health(), site, names),
            diagnoses=diagnoses(session) if session else [],
            slurm=slurm_panel(self.slurm), reports=self._reports_panel(),
            runs=self.store.runs(limit=self.limits["runs"]),
            audit=self.store.audit(limit=self.limits["audit"]))

    def _reports_panel(self) -> dict[str, Any]:
        if self.reports is None:
            return {"problem": "no report folder configured (start with --reports DIR)",
                    "items": []}
        if not self.reports.is_dir():
            return {"problem": f"the report folder {self.reports} does not exist", "items": []}
        return {"problem": "", "root": str(self.reports),
                "items": dark_reports(self.reports, self.limits["reports"])}

    def run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        run = self.store.run(run_id)
        if run is None or run["report"] is None:
            return self.error(request, 404, "No such run", f"no stored report for run {run_id}")
        document = report_html(run["report"])
        nav = self.env.get_template("_nav.html").render(
            base=request.scope.get("root_path", ""), run=run)
        return HTMLResponse(with_nav(document, nav),
                            headers={"Content-Security-Policy": _CSP,
                                     "Referrer-Policy": "same-origin"})

    def report_file(self, request: Request) -> Response:
        rel = request.path_params["path"]
        target = inside(self.reports, rel) if self.reports is not None else None
        if target is None or not target.exists():
            return self.error(request, 404, "Not found",
                              f"{rel!r} is not a file of the report folder")
        if target.is_file():
            return FileResponse(target, headers=_FILE_HEADERS)
        if rel and not rel.endswith("/"):
            # Relative links in a report's index.html resolve against the folder.
            return RedirectResponse(request.url.path + "/", status_code=307)
        if (target / "index.html").is_file():
            return FileResponse(target / "index.html", headers=_FILE_HEADERS)
        entries = [{"name": p.name + "/" if p.is_dir() else p.name,
                    "href": quote(p.name) + ("/" if p.is_dir() else ""),
                    "size": "" if p.is_dir() else p.stat().st_size}
                   for p in sorted(target.iterdir(), key=lambda p: (not p.is_dir(), p.name))
                   if not p.name.startswith(".")]
        return self.page(request, "listing.html", rel=rel, entries=entries)

    async def diagnose(self, request: Request) -> Response:
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host"):
            return self.error(request, 403, "Refused",
                              f"a diagnosis starts from the dashboard's own page, not {origin}")
        form = await request.form(max_files=0, max_fields=8)
        runbook, instrument = form.get("runbook"), form.get("instrument")
        if not isinstance(runbook, str) or not isinstance(instrument, str):
            return self.error(request, 400, "Bad request", "give a runbook and an instrument")
        session, problem = await run_in_threadpool(self.sessions.get)
        if session is None:
            return self.error(request, 503, "Runbooks not loaded", problem)
        if runbook not in {d["id"] for d in diagnoses(session)}:
            return self.error(request, 400, "Not a diagnosis",
                              f"'{runbook}' is not a diagnosis that can be started here")
        try:
            name = session.inventory.instrument(instrument).name
        except RunbookError as exc:
            return self.error(request, 400, "Unknown instrument", str(exc))
        rb = session.catalog.get(runbook).runbook
        params = {n: name for n, p in rb.params.items() if p.type == "instrument"}
        try:
            _, run_id = await run_in_threadpool(
                lambda: walk(session, "diagnose", runbook, params, instrument=name,
                             store=self.store))
        except RunbookError as exc:
            return self.error(request, 500, "The diagnosis did not run", str(exc))
        return RedirectResponse(f"{request.scope.get('root_path', '')}/runs/{run_id}",
                                status_code=303)


def create_app(store: Store, session_loader: Callable[[], Session], *,
               reports: Path | None = None, slurm: SlurmSource | None = None,
               runs_limit: int = 20, reports_limit: int = 20,
               audit_limit: int = 50) -> Starlette:
    """The dashboard over `store`; `session_loader()` gives the site and runbooks that the
    "diagnose now" form offers (called once, when first needed), `reports` is the root of
    the dark characterization reports, and `slurm()` lists the calibration jobs."""
    board = _Dashboard(store, _Sessions(session_loader), reports, slurm,
                       {"runs": runs_limit, "reports": reports_limit, "audit": audit_limit})
    return Starlette(routes=[
        Route("/", board.index, name="index"),
        Route("/runs/{run_id}", board.run, name="run"),
        Route("/reports/{path:path}", board.report_file, name="reports"),
        Route("/diagnose", board.diagnose, methods=["POST"], name="diagnose"),
    ])
