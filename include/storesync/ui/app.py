"""The FastAPI application behind the Storesync view, mounted by the Airflow plugin.

Airflow mounts a plugin's FastAPI app under its api-server but does not protect it: every route
here checks the caller itself. The caller's JWT (the ``Authorization: Bearer`` header, else the
``_token`` cookie the Airflow UI sets at login) is verified by Airflow's auth manager; reading
needs the right to read DAG runs of the replay DAG, an action the right to trigger them
(``is_authorized_dag`` with GET / POST on ``DagAccessEntity.RUN``). Anonymous page requests are
sent to Airflow's login page; anonymous API requests get 401.

An action (replay dead letters) triggers ``storesync_dead_letter_replay`` through Airflow's own
REST API *with the caller's token*, so Airflow checks the caller again, the run is theirs in the
audit log, and the plugin holds no credentials of its own.

Routes (under the mount, ``/storesync`` by default)::

    GET  /                         the page (HTML)
    GET  /api/overview             what the page's overview shows (JSON)
    GET  /api/deliveries/{kind}    dead letters (dead) or held rows (held), paged, masked
    GET  /api/quarantine           the quarantine
    GET  /api/ltv                  LTV buckets
    GET  /api/stores               the stores this view reads
    POST /api/actions/replay       trigger the replay DAG ({"ids": [...], "dry_run": bool, ...})
    GET  /data-docs/{path}         the GX Data Docs, CDN links rewritten to the vendored copies
    GET  /static/{path}            the page's own script, style sheet and the vendored assets
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from storesync.ui.datadocs import DataDocsSite, ExternalAsset, rewrite_offline, site_root_for
from storesync.ui.filters import BadRequest, Filters

log = logging.getLogger(__name__)

REPLAY_DAG = "storesync_dead_letter_replay"
TOKEN_COOKIE = "_token"  # airflow.api_fastapi.auth.managers.base_auth_manager.COOKIE_NAME_JWT_TOKEN
MAX_REPLAY_IDS = 1000


class NotAuthenticated(Exception):
    """No valid token: a page request goes to the login page, an API request gets 401."""


@dataclass(frozen=True)
class Caller:
    user: Any
    token: str
    can_trigger: bool


class AirflowAuth:
    """Airflow's auth manager, as this view asks it (imported lazily: plugin load stays cheap)."""

    async def user(self, token: str):
        from jwt import InvalidTokenError

        from airflow.api_fastapi.app import get_auth_manager

        try:
            return await get_auth_manager().get_user_from_token(token)
        except InvalidTokenError:  # expired, revoked, forged: all mean "log in again"
            return None

    def _allowed(self, user, method: str) -> bool:
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

        return get_auth_manager().is_authorized_dag(method=method, access_entity=DagAccessEntity.RUN,
                                                    details=DagDetails(id=REPLAY_DAG), user=user)

    def can_read(self, user) -> bool:
        return self._allowed(user, "GET")

    def can_trigger(self, user) -> bool:
        return self._allowed(user, "POST")

    def login_url(self, next_url: str) -> str:
        from airflow.api_fastapi.app import get_auth_manager

        return get_auth_manager().get_url_login(next_url=next_url)


def trigger_dag_run(api_base: str, token: str, dag_id: str, conf: dict, note: str) -> tuple[int, dict]:
    """POST a DAG run to Airflow's REST API as the token's user; returns (status, body)."""
    import requests

    with requests.Session() as session:
        session.trust_env = False  # the api-server calls itself: never through a proxy
        response = session.post(f"{api_base.rstrip('/')}/api/v2/dags/{dag_id}/dagRuns",
                                json={"logical_date": None, "conf": conf, "note": note},
                                headers={"Authorization": f"Bearer {token}"}, timeout=30)
    try:
        body = response.json()
    except ValueError:
        body = {"detail": response.text[:500]}
    return response.status_code, body


@dataclass
class UIConfig:
    """What the view reads. ``stores``: name -> ledger URL; actions run for ``replay_store`` only
    (the store whose ledger the replay DAG's workers use)."""

    stores: dict[str, str]
    static_dir: Path
    site: DataDocsSite | None = None
    replay_store: str | None = None
    budgets: dict[str, tuple[int, float]] = field(default_factory=dict)
    api_base: str | None = None  # Airflow's REST API; default: the origin of the request

    @classmethod
    def from_settings(cls, static_dir: Path) -> UIConfig:
        """From storesync's settings (``STORESYNC_*``), plus ``STORESYNC_UI_STORES`` (a JSON
        object of store name -> ledger URL, for a view over several stores) and
        ``STORESYNC_UI_DATA_DOCS_DIR`` / ``STORESYNC_UI_RESULTS_DIR``."""
        from storesync.core.config import load_settings

        settings = load_settings()
        stores = {"store": settings.ledger_url}
        raw = os.environ.get("STORESYNC_UI_STORES")
        if raw:
            try:
                stores = {str(k): str(v) for k, v in json.loads(raw).items()}
            except (ValueError, AttributeError) as exc:
                raise ValueError("STORESYNC_UI_STORES must be a JSON object of store name -> ledger URL") from exc
        replay = next((name for name, url in stores.items() if url == settings.ledger_url), None)
        data_dir = Path(settings.data_dir)
        site = DataDocsSite(os.environ.get("STORESYNC_UI_DATA_DOCS_DIR") or data_dir / "data_docs",
                            os.environ.get("STORESYNC_UI_RESULTS_DIR") or data_dir / "quality_results")
        sendlane = settings.sendlane
        budgets = {"sendlane": (sendlane.budget_per_minute, sendlane.budget_window_s)} \
            if sendlane.budget_per_minute > 0 else {}
        return cls(stores=stores, static_dir=static_dir, site=site, replay_store=replay, budgets=budgets)


class ReplayRequest(BaseModel):
    store: str | None = None
    ids: list[int] = Field(default_factory=list, max_length=MAX_REPLAY_IDS)
    vendor: str | None = None
    event_type: str | None = Field(default=None, max_length=40)
    dry_run: bool = True
    all_matching: bool = False  # no ids: every dead letter of the vendor / event type


def create_app(config: UIConfig, *, auth: AirflowAuth | None = None,
               trigger: Callable[[str, str, str, dict, str], tuple[int, dict]] = trigger_dag_run) -> FastAPI:
    auth = auth or AirflowAuth()
    readers: dict = {}
    app = FastAPI(title="Storesync", docs_url=None, redoc_url=None, openapi_url=None)

    def reader(store: str | None):
        from storesync.ui.queries import LedgerReader  # the ledger's tables: loaded on the first request

        name = store or next(iter(config.stores))
        if name not in config.stores:
            raise BadRequest(f"unknown store {name!r}; known: {', '.join(config.stores)}")
        if name not in readers:
            readers[name] = LedgerReader(_engine(config.stores[name]), budgets=config.budgets)
        return name, readers[name]

    async def caller(request: Request) -> Caller:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else request.cookies.get(TOKEN_COOKIE)
        user = await auth.user(token) if token else None
        if user is None:
            raise NotAuthenticated()
        if not auth.can_read(user):
            raise HTTPException(403, "You may not read the storesync DAGs' runs")
        return Caller(user=user, token=token, can_trigger=auth.can_trigger(user))

    @app.exception_handler(NotAuthenticated)
    async def _not_authenticated(request: Request, _exc: NotAuthenticated):
        wants_page = request.method == "GET" and "text/html" in request.headers.get("accept", "") \
            and "/api/" not in request.url.path
        if wants_page:
            return RedirectResponse(auth.login_url(str(request.url)), status_code=303)
        return JSONResponse({"detail": "Not authenticated"}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(BadRequest)
    async def _bad_request(_request: Request, exc: BadRequest):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    def filters(vendor: str | None = None, account: str | None = None,
                days: int = Query(14, ge=1, le=92)) -> Filters:
        return Filters(vendor=vendor, account=account, days=days)

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request, who: Caller = Depends(caller), store: str | None = None,
             shown: Filters = Depends(filters)) -> HTMLResponse:
        from storesync.ui.page import render_page

        name, ledger = reader(store)
        html = render_page(base=_base(request), store=name, stores=list(config.stores), filters=shown,
                           overview=ledger.overview(shown), quarantine=ledger.quarantine(shown.days),
                           ltv=ledger.ltv(), actions_enabled=name == config.replay_store,
                           can_trigger=who.can_trigger, data_docs=config.site is not None and config.site.ready(),
                           airflow_base=_api_base(config, request), replay_dag=REPLAY_DAG)
        return HTMLResponse(html, headers=_NO_STORE)

    @app.get("/api/stores")
    def stores(who: Caller = Depends(caller)) -> dict:
        return {"stores": [{"name": n, "actions": n == config.replay_store} for n in config.stores],
                "can_trigger": who.can_trigger}

    @app.get("/api/overview")
    def overview(who: Caller = Depends(caller), store: str | None = None,
                 shown: Filters = Depends(filters)) -> JSONResponse:
        name, ledger = reader(store)
        return JSONResponse({"store": name, **ledger.overview(shown)}, headers=_NO_STORE)

    @app.get("/api/deliveries/{kind}")
    def problems(kind: str, who: Caller = Depends(caller), store: str | None = None,
                 shown: Filters = Depends(filters), event_type: str | None = None,
                 limit: int = Query(50, ge=1, le=200), offset: int = Query(0, ge=0)) -> JSONResponse:
        name, ledger = reader(store)
        data = ledger.problems(kind, shown, event_type=event_type, limit=limit, offset=offset)
        return JSONResponse({"store": name, **data}, headers=_NO_STORE)

    @app.get("/api/quarantine")
    def quarantine(who: Caller = Depends(caller), store: str | None = None,
                   days: int = Query(14, ge=1, le=92)) -> JSONResponse:
        name, ledger = reader(store)
        return JSONResponse({"store": name, **ledger.quarantine(days)}, headers=_NO_STORE)

    @app.get("/api/ltv")
    def ltv(who: Caller = Depends(caller), store: str | None = None) -> JSONResponse:
        name, ledger = reader(store)
        return JSONResponse({"store": name, **ledger.ltv()}, headers=_NO_STORE)

    @app.post("/api/actions/replay")
    def replay(body: ReplayRequest, request: Request, who: Caller = Depends(caller)) -> JSONResponse:
        name, _ = reader(body.store)
        if name != config.replay_store:
            raise HTTPException(409, f"store {name!r} is not the ledger this Airflow's replay DAG works on")
        if not who.can_trigger:
            raise HTTPException(403, "Replaying needs the right to trigger DAG runs")
        if not body.ids and not body.all_matching:
            raise BadRequest("choose dead letters to replay (ids), or ask for all matching (all_matching)")
        vendor = Filters(vendor=body.vendor).vendor  # validates it
        conf = {"vendor": vendor, "event_type": body.event_type or None, "ids": sorted(set(body.ids)),
                "dry_run": body.dry_run}
        what = f"{len(conf['ids'])} chosen" if conf["ids"] else "all matching"
        note = f"From the Storesync view: {'dry run of ' if body.dry_run else ''}replay of {what} dead letters"
        status, answer = trigger(_api_base(config, request), who.token, REPLAY_DAG, conf, note)
        if status not in (200, 201):
            log.warning("triggering %s was refused by Airflow's API: %s", REPLAY_DAG, status)
            return JSONResponse({"detail": answer.get("detail", answer), "airflow_status": status},
                                status_code=status if status in (400, 401, 403, 404, 409, 422) else 502)
        run_id = answer.get("dag_run_id")
        return JSONResponse({"dag_id": REPLAY_DAG, "dag_run_id": run_id, "state": answer.get("state"),
                             "conf": conf, "url": f"{_api_base(config, request)}/dags/{REPLAY_DAG}/runs/{run_id}"},
                            status_code=201)

    @app.get("/data-docs/{path:path}")
    def data_docs(path: str, request: Request, who: Caller = Depends(caller)) -> Response:
        if config.site is None or not config.site.ready():
            raise HTTPException(404, "No Data Docs yet: no validation results have been stored")
        if path == "" and not request.url.path.endswith("/"):
            return RedirectResponse(request.url.path + "/", status_code=307)
        found = config.site.file(path)
        if found is None:
            raise HTTPException(404, "No such page in the Data Docs")
        if found.suffix.lower() == ".html":
            relative = found.relative_to(config.site.site_dir.resolve()).as_posix()
            try:
                html = rewrite_offline(found.read_text(encoding="utf-8"), vendor_url=f"{_base(request)}static/vendor/",
                                       site_root=site_root_for(relative))
            except ExternalAsset as exc:
                raise HTTPException(500, f"Data Docs page needs a network asset the plugin lacks: {exc}") from exc
            return HTMLResponse(html)
        return FileResponse(found, media_type=mimetypes.guess_type(found.name)[0])

    @app.get("/static/{path:path}")
    def static(path: str, who: Caller = Depends(caller)) -> FileResponse:
        root = config.static_dir.resolve()
        found = (root / path).resolve()
        if not found.is_relative_to(root) or not found.is_file():
            raise HTTPException(404, "No such file")
        return FileResponse(found, media_type=mimetypes.guess_type(found.name)[0],
                            headers={"Cache-Control": "private, max-age=3600"})

    return app


_NO_STORE = {"Cache-Control": "no-store"}


def _base(request: Request) -> str:
    """The mount's path with a trailing slash (``/storesync/``), for links inside the page."""
    root = request.scope.get("root_path", "").rstrip("/")
    return f"{root}/"


def _api_base(config: UIConfig, request: Request) -> str:
    if config.api_base:
        return config.api_base.rstrip("/")
    try:
        from airflow.configuration import conf

        configured = conf.get("api", "base_url", fallback="")
    except ImportError:  # unit tests without Airflow's settings
        configured = ""
    if configured:
        return configured.rstrip("/")
    return f"{request.url.scheme}://{request.url.netloc}"


def _engine(url: str):
    from sqlalchemy import create_engine

    kwargs: dict[str, Any] = {"hide_parameters": True, "pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs.update(pool_size=4, max_overflow=4)
    return create_engine(url, **kwargs)
