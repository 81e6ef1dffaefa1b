"""The FastAPI application behind the Storesync view, mounted by the Airflow plugin.

Airflow mounts a plugin's FastAPI app under its api-server but does not protect it: every route
here checks the caller itself. The caller's JWT (the ``Authorization: Bearer`` header, else the
``_token`` cookie the Airflow UI sets at login) is verified by Airflow's auth manager; reading
needs the right to read DAG runs of the replay DAG, an action the right to trigger them
(``is_authorized_dag`` with GET / POST on ``DagAccessEntity.RUN``). Anonymous page requests are
sent to Airflow's login page; anonymous API requests get 401.

An action (replay dead letters, resolve held rows) triggers ``storesync_dead_letter_replay`` through Airflow's own
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
    POST /api/actions/resolve      trigger it to resolve held rows ({"ids": [...], "resolution": "arrived"|"resend"})
    GET  /data-docs/{path}         the GX Data Docs, CDN links rewritten to the vendored copies
    GET  /static/{path}            the page's own script, style sheet and the vendored assets
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError

from storesync.core.errors import ConfigurationError
from storesync.ui.datadocs import DataDocsSite, ExternalAsset, rewrite_offline, site_root_for
from storesync.ui.filters import BadRequest, Filters, StoreScope

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


class AirflowAuth:
    """Airflow's auth manager, as this view asks it (imported lazily: plugin load stays cheap)."""

    async def user(self, token: str):
        from jwt import InvalidTokenError

        from airflow.api_fastapi.app import get_auth_manager

        try:
            return await get_auth_manager().get_user_from_token(token)
        except InvalidTokenError:  # expired, revoked, forged: all mean "log in again"
            return None

    def _allowed(self, user, method: str, dag_id: str) -> bool:
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

        return get_auth_manager().is_authorized_dag(method=method, access_entity=DagAccessEntity.RUN,
                                                    details=DagDetails(id=dag_id), user=user)

    def can_read(self, user, dag_id: str) -> bool:
        return self._allowed(user, "GET", dag_id)

    def can_trigger(self, user, dag_id: str) -> bool:
        return self._allowed(user, "POST", dag_id)

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


@dataclass(frozen=True)
class StoreConfig:
    """One store as the view reads it: its ledger, its rows in it, its replay DAG, its budgets."""

    name: str
    ledger_url: str
    scope: StoreScope = field(default_factory=StoreScope)
    replay_dag: str = REPLAY_DAG
    budgets: dict[str, tuple[int, float]] = field(default_factory=dict)
    # Its [sendlane|sailthru].unknown_outcome settings: which unknown rows the next run settles
    # (remedies.classify_unknown's keywords); the defaults are storesync's.
    unknown_outcome: dict[str, str] = field(default_factory=dict)


def unknown_outcome_of(settings) -> dict[str, str]:
    """classify_unknown's keywords from storesync settings."""
    return {"sendlane_unknown_outcome": settings.sendlane.unknown_outcome,
            "sailthru_unknown_outcome": settings.sailthru.unknown_outcome}


def budgets_of(settings) -> dict[str, tuple[int, float]]:
    """vendor -> (budget per window, window seconds) from storesync settings (0: no budget)."""
    sendlane, sailthru = settings.sendlane, settings.sailthru
    budgets = {}
    if sendlane.budget_per_minute > 0:
        budgets["sendlane"] = (sendlane.budget_per_minute, float(sendlane.budget_window_s))
    if sailthru.budget_per_minute > 0:
        budgets["sailthru"] = (sailthru.budget_per_minute, float(getattr(sailthru, "budget_window_s", 60.0)))
    return budgets


def stores_from_airflow() -> dict[str, StoreConfig]:
    """The stores of ``storesync_stores.toml`` in Airflow's dags folder, each resolved through
    its connections as its DAGs resolve them (ledger, vendor accounts, budgets)."""
    from airflow.configuration import conf

    from storesync.provider.connections import ConnectionIds, resolve_settings
    from storesync.provider.stores import load_stores

    found = {}
    for store in load_stores(conf.get("core", "dags_folder")):
        settings = resolve_settings(ConnectionIds(warehouse=None, ledger=store.ledger_conn_id,
                                                  sendlane=store.sendlane_conn_id, sailthru=store.sailthru_conn_id))
        accounts = tuple((vendor, getattr(settings, vendor).account) for vendor in store.vendors)
        found[store.name] = StoreConfig(
            name=store.name, ledger_url=settings.ledger_url,
            scope=StoreScope(accounts=accounts, sync_prefix="" if store.is_default else f"{store.name}."),
            replay_dag=store.dag_id("dead_letter_replay"), budgets=budgets_of(settings),
            unknown_outcome=unknown_outcome_of(settings))
    return found


def stores_from_env(raw: str) -> dict[str, StoreConfig]:
    """``STORESYNC_UI_STORES``: a JSON object of store name -> ledger URL (every row of each)."""
    from storesync.core.config import load_settings

    try:
        named = {str(k): str(v) for k, v in json.loads(raw).items()}
    except (ValueError, AttributeError) as exc:
        raise ValueError("STORESYNC_UI_STORES must be a JSON object of store name -> ledger URL") from exc
    settings = load_settings()
    budgets, unknown_outcome = budgets_of(settings), unknown_outcome_of(settings)
    return {name: StoreConfig(name=name, ledger_url=url, budgets=budgets, unknown_outcome=unknown_outcome,
                              replay_dag=REPLAY_DAG if name == "default" else f"storesync_{name}_dead_letter_replay")
            for name, url in named.items()}


@dataclass
class UIConfig:
    """What the view reads: ``stores`` (or ``load_stores``, called on first use and again every
    ``reload_s``: connections change while the api-server runs), the Data Docs site, and where
    Airflow's REST API is (default: the origin of the request)."""

    static_dir: Path
    stores: dict[str, StoreConfig] | None = None
    load_stores: Callable[[], dict[str, StoreConfig]] | None = None
    site: DataDocsSite | None = None
    api_base: str | None = None
    reload_s: float = 60.0

    @classmethod
    def from_environment(cls, static_dir: Path) -> UIConfig:
        """Inside Airflow: the stores from ``storesync_stores.toml`` and the connections (or
        ``STORESYNC_UI_STORES``); the Data Docs from ``STORESYNC_UI_DATA_DOCS_DIR`` (default
        ``<data_dir>/data_docs``), built from ``STORESYNC_UI_RESULTS_DIR`` (default
        ``<data_dir>/quality_results``) when missing."""
        from storesync.core.config import load_settings

        raw = os.environ.get("STORESYNC_UI_STORES")
        data_dir = Path(load_settings().data_dir)
        site = DataDocsSite(os.environ.get("STORESYNC_UI_DATA_DOCS_DIR") or data_dir / "data_docs",
                            os.environ.get("STORESYNC_UI_RESULTS_DIR") or data_dir / "quality_results")
        return cls(static_dir=static_dir, site=site,
                   load_stores=(lambda: stores_from_env(raw)) if raw else stores_from_airflow)


class ReplayRequest(BaseModel):
    store: str | None = None
    ids: list[int] = Field(default_factory=list, max_length=MAX_REPLAY_IDS)
    vendor: str | None = None
    event_type: str | None = Field(default=None, max_length=40)
    dry_run: bool = True
    all_matching: bool = False  # no ids: every dead letter of the vendor / event type


class ResolveRequest(BaseModel):
    """Held rows a person checked at the vendor: ``arrived`` (it has them) or ``resend`` (it does not)."""

    store: str | None = None
    ids: list[int] = Field(min_length=1, max_length=MAX_REPLAY_IDS)
    resolution: Literal["arrived", "resend"]


def create_app(config: UIConfig, *, auth: AirflowAuth | None = None,
               trigger: Callable[[str, str, str, dict, str], tuple[int, dict]] = trigger_dag_run) -> FastAPI:
    auth = auth or AirflowAuth()
    readers: dict = {}
    engines: dict = {}
    loaded = {"stores": config.stores, "at": time.monotonic()}
    lock = threading.Lock()
    app = FastAPI(title="Storesync", docs_url=None, redoc_url=None, openapi_url=None)

    def stores() -> dict[str, StoreConfig]:
        with lock:
            stale = time.monotonic() - loaded["at"] > config.reload_s
            if config.load_stores is not None and (loaded["stores"] is None or stale):
                loaded["stores"], loaded["at"] = config.load_stores(), time.monotonic()
                readers.clear()
            return loaded["stores"] or {}

    def reader(store: str | None):
        """(the store's config, its reader); the first store when none is named."""
        from storesync.ui.queries import LedgerReader  # the ledger's tables: loaded on the first request

        known = stores()
        if not known:
            raise BadRequest("no stores are configured")
        name = store or next(iter(known))
        if name not in known:
            raise BadRequest(f"unknown store {name!r}; known: {', '.join(known)}")
        chosen = known[name]
        with lock:
            if name not in readers:
                if chosen.ledger_url not in engines:  # stores sharing a ledger share its engine
                    engines[chosen.ledger_url] = _engine(chosen.ledger_url)
                readers[name] = LedgerReader(engines[chosen.ledger_url], scope=chosen.scope,
                                             budgets=chosen.budgets, unknown_outcome=chosen.unknown_outcome)
            return chosen, readers[name]

    async def caller(request: Request) -> Caller:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else request.cookies.get(TOKEN_COOKIE)
        user = await auth.user(token) if token else None
        if user is None:
            raise NotAuthenticated()
        return Caller(user=user, token=token)

    def store_for(request: Request, who: Caller, store: str | None):
        """The store asked for, once the caller may read its replay DAG's runs."""
        chosen, ledger = reader(store)
        if not auth.can_read(who.user, chosen.replay_dag):
            raise HTTPException(403, f"You may not read the runs of {chosen.replay_dag}")
        return chosen, ledger

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

    @app.exception_handler(ConfigurationError)
    async def _misconfigured(_request: Request, exc: ConfigurationError):
        # A stores file or a connection that is wrong: its message names the file, store and key.
        return JSONResponse({"detail": f"storesync is misconfigured: {exc}"}, status_code=503)

    @app.exception_handler(DBAPIError)
    async def _ledger_down(_request: Request, exc: DBAPIError):
        # Not the statement or its parameters (payloads): the driver's first line says what failed.
        first_line = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
        log.warning("the ledger database failed: %s", first_line)
        return JSONResponse({"detail": f"the ledger database did not answer: {first_line}"}, status_code=503)

    def filters(vendor: str | None = None, account: str | None = None,
                days: int = Query(14, ge=1, le=92)) -> Filters:
        return Filters(vendor=vendor, account=account, days=days)

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request, who: Caller = Depends(caller), store: str | None = None,
             shown=Depends(filters)) -> HTMLResponse:
        from storesync.ui.page import render_page

        chosen, ledger = store_for(request, who, store)
        html = render_page(base=_base(request), store=chosen.name, stores=list(stores()), filters=shown,
                           overview=ledger.overview(shown), quarantine=ledger.quarantine(shown.days),
                           ltv=ledger.ltv(), can_trigger=auth.can_trigger(who.user, chosen.replay_dag),
                           data_docs=config.site is not None and config.site.ready(),
                           airflow_base=_api_base(config, request), replay_dag=chosen.replay_dag)
        return HTMLResponse(html, headers=_NO_STORE)

    @app.get("/api/stores")
    def list_stores(who: Caller = Depends(caller)) -> dict:
        return {"stores": [{"name": s.name, "replay_dag": s.replay_dag,
                            "accounts": [list(a) for a in s.scope.accounts or ()],
                            "can_trigger": auth.can_trigger(who.user, s.replay_dag)}
                           for s in stores().values() if auth.can_read(who.user, s.replay_dag)]}

    @app.get("/api/overview")
    def overview(request: Request, who: Caller = Depends(caller), store: str | None = None,
                 shown=Depends(filters)) -> JSONResponse:
        chosen, ledger = store_for(request, who, store)
        return JSONResponse({"store": chosen.name, **ledger.overview(shown)}, headers=_NO_STORE)

    @app.get("/api/deliveries/{kind}")
    def problems(kind: str, request: Request, who: Caller = Depends(caller), store: str | None = None,
                 shown=Depends(filters), event_type: str | None = None,
                 limit: int = Query(50, ge=1, le=200), offset: int = Query(0, ge=0)) -> JSONResponse:
        chosen, ledger = store_for(request, who, store)
        data = ledger.problems(kind, shown, event_type=event_type, limit=limit, offset=offset)
        return JSONResponse({"store": chosen.name, **data}, headers=_NO_STORE)

    @app.get("/api/quarantine")
    def quarantine(request: Request, who: Caller = Depends(caller), store: str | None = None,
                   days: int = Query(14, ge=1, le=92)) -> JSONResponse:
        chosen, ledger = store_for(request, who, store)
        return JSONResponse({"store": chosen.name, **ledger.quarantine(days)}, headers=_NO_STORE)

    @app.get("/api/ltv")
    def ltv(request: Request, who: Caller = Depends(caller), store: str | None = None) -> JSONResponse:
        chosen, ledger = store_for(request, who, store)
        return JSONResponse({"store": chosen.name, **ledger.ltv()}, headers=_NO_STORE)

    @app.post("/api/actions/replay")
    def replay(body: ReplayRequest, request: Request, who: Caller = Depends(caller)) -> JSONResponse:
        chosen, _ = store_for(request, who, body.store)
        dag_id = chosen.replay_dag
        if not auth.can_trigger(who.user, dag_id):
            raise HTTPException(403, f"Replaying needs the right to trigger runs of {dag_id}")
        if not body.ids and not body.all_matching:
            raise BadRequest("choose dead letters to replay (ids), or ask for all matching (all_matching)")
        vendor = Filters(vendor=body.vendor).vendor  # validates it
        conf = {"vendor": vendor, "event_type": body.event_type or None, "ids": sorted(set(body.ids)),
                "dry_run": body.dry_run}
        what = f"{len(conf['ids'])} chosen" if conf["ids"] else "all matching"
        note = f"From the Storesync view: {'dry run of ' if body.dry_run else ''}replay of {what} dead letters"
        return start_run(request, who, dag_id, conf, note)

    @app.post("/api/actions/resolve")
    def resolve(body: ResolveRequest, request: Request, who: Caller = Depends(caller)) -> JSONResponse:
        """Resolve held rows through the replay DAG (``held_ids``): ``storesync reconcile --ids``'s
        path, which refuses ids that are not this store's held rows and never resends a row still
        awaiting its own lookup. Refused here first, with nothing triggered: ids that are not this
        store's unknown rows (400) and rows the next run settles (409: a lookup, a safe resend or a
        read; a person's answer beside it could count one twice)."""
        chosen, ledger = store_for(request, who, body.store)
        dag_id = chosen.replay_dag
        if not auth.can_trigger(who.user, dag_id):
            raise HTTPException(403, f"Resolving held rows needs the right to trigger runs of {dag_id}")
        ids = sorted(set(body.ids))
        kinds = ledger.unknown_rows(ids)
        missing = [i for i in ids if i not in kinds]
        if missing:
            raise BadRequest(f"{len(missing)} id(s) are not deliveries of store {chosen.name} with an "
                             f"unknown outcome (settled since, or never were): {_listed(missing)}")
        settling = {i: kind for i, kind in kinds.items() if kind is not None}
        if settling:
            per_kind = ", ".join(f"{kind} {sum(1 for k in settling.values() if k == kind)}"
                                 for kind in sorted(set(settling.values())))
            raise HTTPException(409, f"{len(settling)} of the chosen rows are not held: the next scheduled "
                                     f"run settles them ({per_kind}); nothing was triggered: "
                                     f"{_listed(sorted(settling))}")
        conf = {"held_ids": ids, "resolution": body.resolution, "dry_run": False}
        what = {"arrived": "marked arrived", "resend": "resent"}[body.resolution]
        note = f"From the Storesync view: {len(conf['held_ids'])} held deliveries {what}"
        return start_run(request, who, dag_id, conf, note)

    def start_run(request: Request, who: Caller, dag_id: str, conf: dict, note: str) -> JSONResponse:
        api_base = _api_base(config, request)
        status, answer = trigger(api_base, who.token, dag_id, conf, note)
        if status not in (200, 201):
            log.warning("triggering %s was refused by Airflow's API: %s", dag_id, status)
            return JSONResponse({"detail": answer.get("detail", answer), "airflow_status": status},
                                status_code=status if status in (400, 401, 403, 404, 409, 422) else 502)
        run_id = answer.get("dag_run_id")
        return JSONResponse({"dag_id": dag_id, "dag_run_id": run_id, "state": answer.get("state"), "conf": conf,
                             "url": f"{api_base}/dags/{dag_id}/runs/{quote(str(run_id), safe='')}"},
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


def _listed(ids: list[int]) -> str:
    return ", ".join(map(str, ids[:20])) + (" ..." if len(ids) > 20 else "")


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
        if url.startswith("postgresql"):
            # The view's statements are short: JIT compiling them costs more (~0.1 s) than it saves.
            kwargs["connect_args"] = {"options": "-c jit=off"}
    return create_engine(url, **kwargs)
