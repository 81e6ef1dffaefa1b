"""The Storesync view in a real browser, against a real Airflow api-server with the plugin.

Airflow (api-server, scheduler, dag-processor) runs with the simple auth manager and two users
(an admin, a viewer), the plugins folder of this repository and a ledger with known rows on
PostgreSQL. Debian's chromium, driven by Playwright, with every request off the loopback
aborted (the page must work offline):

* anonymous: the API answers 401 and the page sends the browser to Airflow's login;
* the admin logs in through Airflow's login form, finds "Storesync" in the Airflow UI's
  navigation, and the page loads with no console error and no failed request; its numbers equal
  the ledger's (SQL straight on the database);
* "Dry run" on two chosen dead letters starts a run of the replay DAG through Airflow's API, with
  those ids, which the scheduler runs to success;
* the viewer sees the page but no replay buttons, and the replay endpoint refuses them (403);
* the GX Data Docs linked from the page render (bootstrap-table fills its table) with nothing
  from a CDN.

Screenshots go to ``test-artifacts/ui/`` (kept by CI as artifacts).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import quote, urlparse

import pytest
from airflow_harness import REPO_ROOT, AirflowStack, root_conftest
from ui_ledger import SAILTHRU_ACCOUNT, SENDLANE_ACCOUNT, build_ui_ledger, ledger_counts

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
REPLAY_DAG = "storesync_dead_letter_replay"
ARTIFACTS = REPO_ROOT / "test-artifacts" / "ui"
USERS = {"admin": ("admin", "admin-pass-1"), "viewer": ("viewer", "viewer-pass-1")}


def _metrics(page) -> dict[str, int]:
    """Every ``data-metric`` number on the page, as the browser shows it."""
    values = page.eval_on_selector_all("[data-metric]", "els => els.map(e => [e.dataset.metric, e.textContent])")
    return {name: int(text.replace(",", "")) for name, text in values if re.fullmatch(r"[\d,]+", text.strip())}


@pytest.fixture(scope="module")
def airflow_with_plugin(request, postgres_admin_url, tmp_path_factory):
    if not CHROMIUM.exists():
        root_conftest(request.config).unavailable(
            f"{CHROMIUM} is not installed (`make browser` installs Debian's chromium when run as root)")
    conftest = root_conftest(request.config)
    workdir = tmp_path_factory.mktemp("ui-browser")
    urls = {name: conftest.create_pg_database(postgres_admin_url, f"storesync_ui_{name}")
            for name in ("airflow", "ledger")}
    stack = None
    try:
        build_ui_ledger(urls["ledger"])
        site = workdir / "data-docs"
        _data_docs(site)
        home = workdir / "airflow-home"
        home.mkdir()
        passwords = home / "passwords.json"
        passwords.write_text(json.dumps(dict(USERS.values())))
        stack = AirflowStack(workdir, sql_alchemy_conn=urls["airflow"],
                             dag_files=[REPO_ROOT / "dags" / f"{REPLAY_DAG}.py"], extra_env={
                                 "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
                                 "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
                                 "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                                 "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
                                 "STORESYNC_LEDGER_URL": urls["ledger"],
                                 "STORESYNC_WAREHOUSE_URL": f"sqlite:///{workdir / 'no-warehouse.db'}",
                                 "STORESYNC_CONFIG": str(workdir / "no-storesync.toml"),
                                 "STORESYNC_HOME": str(workdir / "storesync-home"),
                                 "STORESYNC_UI_DATA_DOCS_DIR": str(site),
                                 # The default store's accounts: the ledger's rows are theirs.
                                 "STORESYNC_SENDLANE_ACCOUNT_ID": SENDLANE_ACCOUNT,
                                 "STORESYNC_SAILTHRU_ACCOUNT_ID": SAILTHRU_ACCOUNT,
                             })
        with stack.diagnosed("starting Airflow with the Storesync plugin"):
            stack.migrate()
            stack.start_core()
            stack.wait_healthy()
            token = _token(stack, *USERS["admin"])
            stack.session.headers["Authorization"] = f"Bearer {token}"
            stack.wait_for_dag(REPLAY_DAG)
            stack.unpause(REPLAY_DAG)
        yield stack, urls["ledger"]
    finally:
        if stack is not None:
            stack.stop()
        for url in urls.values():
            conftest.drop_pg_database(postgres_admin_url, url)


def _data_docs(site: Path) -> None:
    """A GX site built from one validated batch with a bad row (the real templates, CDN links)."""
    import datetime as dt
    from decimal import Decimal as D

    import pandas as pd

    from storesync.quality import render_data_docs, validate_batch

    row = dict(order_id=1, customer_id=1001, email="buyer@example.com", status="completed", currency="USD",
               subtotal=D("20.00"), total_tax=D("1.60"), total_discounts=D("2.00"), discount_code=None,
               total=D("19.60"), payment_method="Visa", sailthru_bid=None, created_at=dt.datetime(2025, 5, 1),
               updated_at=dt.datetime(2025, 5, 2), lines_subtotal=D("20.00"), line_count=2)
    frame = pd.DataFrame([row, {**row, "order_id": 2, "email": "broken@"}])
    render_data_docs(validate_batch("orders", frame, run_id="run-1", batch_id="orders-0",
                                    now=dt.datetime(2025, 6, 1)), site)


def _token(stack: AirflowStack, username: str, password: str) -> str:
    import requests

    response = requests.post(f"{stack.base_url}/auth/token", json={"username": username, "password": password},
                             timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["access_token"]


class Browser:
    """One chromium context: offline (only the api-server's origin answers), every console
    error, page error and failed request recorded."""

    def __init__(self, playwright, base_url: str) -> None:
        self.browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        self.context = self.browser.new_context(viewport={"width": 1400, "height": 1000})
        self.origin = urlparse(base_url).netloc
        self.errors: list[str] = []
        self.blocked: list[str] = []
        self.context.route("**/*", self._only_local)
        self.context.on("page", self._watch)
        self.page = self.context.new_page()

    def _only_local(self, route) -> None:
        if urlparse(route.request.url).netloc == self.origin:
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def _watch(self, page) -> None:
        page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: self.errors.append(f"failed: {r.url} {r.failure}"))
        page.on("response", lambda r: self.errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)

    def frames_of(self, page) -> list[str]:
        return [f.url for f in page.frames]

    def screenshot(self, name: str, page=None) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        (page or self.page).screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()
        self.browser.close()


@pytest.fixture
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


def test_the_view_in_a_browser(airflow_with_plugin, playwright):
    import requests

    stack, ledger_url = airflow_with_plugin
    base = stack.base_url
    expected = ledger_counts(ledger_url)
    with stack.diagnosed("the Storesync view in a browser"):
        # ---- anonymous: refused ------------------------------------------------------------------
        assert requests.get(f"{base}/storesync/api/overview", timeout=30).status_code == 401
        redirect = requests.get(f"{base}/storesync/", headers={"Accept": "text/html"}, allow_redirects=False,
                                timeout=30)
        assert redirect.status_code == 303 and "/auth/login" in redirect.headers["location"]
        anonymous = Browser(playwright, base)
        try:
            anonymous.page.goto(f"{base}/storesync/")
            anonymous.page.wait_for_url(re.compile(r".*/auth/login.*"))
            assert "Storesync" not in anonymous.page.content().split("<body", 1)[-1][:200]
            anonymous.screenshot("anonymous-sent-to-login")
        finally:
            anonymous.close()

        # ---- the admin logs in through Airflow's form and opens the view from the nav ---------------
        admin = Browser(playwright, base)
        try:
            page = admin.page
            page.goto(f"{base}/auth/login?next={base}/")
            page.get_by_label(re.compile("username", re.I)).fill(USERS["admin"][0])
            page.get_by_label(re.compile("password", re.I)).fill(USERS["admin"][1])
            page.get_by_role("button", name=re.compile("sign in|log ?in", re.I)).click()
            page.wait_for_url(f"{base}/", timeout=60_000)
            nav = page.get_by_role("link", name="Storesync").or_(page.get_by_role("button", name="Storesync"))
            nav.first.click()
            page.wait_for_url(re.compile(r".*/plugin/storesync"))
            frame = page.frame_locator("iframe")
            frame.locator("h1", has_text="Storesync").wait_for(timeout=60_000)
            admin.screenshot("storesync-in-airflow-nav")

            # The page itself, as the frame shows it: no error, nothing off the loopback.
            admin.errors.clear()
            page.goto(f"{base}/storesync/")
            page.locator("#overview svg.chart").first.wait_for()
            page.wait_for_load_state("networkidle")
            assert admin.errors == [] and admin.blocked == [], (admin.errors, admin.blocked)
            shown = _metrics(page)
            assert shown["window-accepted"] == expected["states"]["accepted"]
            assert shown["window-dead"] == expected["states"]["dead"]
            # Of the four unknown outcomes one is a person's (the checkout no rule settles); the
            # next run settles the others (a read, a lookup, a resend): counted apart, no box to pick.
            assert shown["window-held"] == shown["held-total"] == 1
            assert shown["window-settling"] == shown["settling-total"] == expected["unknown"] - 1 == 3
            assert [shown[f"settling-{kind}"] for kind in ("lookup", "resend", "read")] == [1, 1, 1]
            picks = page.locator("#held input.pick")
            held_id = str(expected["unknown_ids"]["held"])
            assert picks.count() == 1 and picks.first.get_attribute("value") == held_id
            assert "storesync reconcile --vendor sendlane" in page.locator("#held pre.remedy").inner_text()
            assert shown["dead-total"] == expected["dead"]
            assert shown["quarantine-open-orders"] == expected["quarantine_open"]["orders"]
            assert shown["ltv-customers"] == expected["ltv_customers"]
            assert "jane.doe@example.com" not in page.content()
            admin.screenshot("storesync-overview")

            # One account: the filters narrow every number.
            page.goto(f"{base}/storesync/?vendor=sendlane&account={SENDLANE_ACCOUNT}")
            assert _metrics(page)["dead-total"] == expected["dead"] - 1

            # ---- an action: a dry-run replay of two chosen dead letters starts a DAG run ------------
            page.goto(f"{base}/storesync/#dead")
            chosen = expected["dead_ids"][:2]
            for delivery_id in chosen:
                page.locator(f"#dead input.pick[value='{delivery_id}']").check()
            page.locator("#dead button[data-action='dry-run']").click()
            result = page.locator("#dead output.action-result[data-run-id]")
            result.wait_for(timeout=30_000)
            run_id = result.get_attribute("data-run-id")
            admin.screenshot("storesync-replay-started")
            assert admin.errors == [], admin.errors
            run = stack.api("GET", f"/api/v2/dags/{REPLAY_DAG}/dagRuns/{quote(run_id, safe='')}")
            assert run["conf"]["ids"] == sorted(chosen) and run["conf"]["dry_run"] is True
            assert "Storesync view" in (run.get("note") or "")
            finished = stack.wait_runs_finished(REPLAY_DAG, [run_id], timeout=240)
            assert finished[run_id]["state"] == "success"
            listed = stack.api("GET", f"/api/v2/dags/{REPLAY_DAG}/dagRuns/{quote(run_id, safe='')}/taskInstances/"
                                      "replay/xcomEntries/return_value")["value"]
            assert listed["dry_run"] is True and sorted(listed["ids"]) == sorted(chosen), listed
            assert ledger_counts(ledger_url)["dead_ids"] == expected["dead_ids"], "a dry run changes nothing"

            # ---- the Data Docs, offline ------------------------------------------------------------
            admin.errors.clear()
            with page.context.expect_page() as opened:
                page.goto(f"{base}/storesync/")
                page.get_by_role("link", name="Data Docs").click()
            docs = opened.value
            docs.wait_for_load_state("networkidle")
            # bootstrap-table (with its filter-control extension) ran: its pager and filters are there.
            docs.get_by_text("Showing 1 to 1 of 1 rows").wait_for(timeout=30_000)
            assert docs.locator(".ge-index-page-validation-results-table tbody tr").count() == 1
            assert docs.locator(".bootstrap-table .filter-control select").count() >= 1
            assert "storesync_orders" in docs.content()
            assert admin.errors == [] and admin.blocked == [], (admin.errors, admin.blocked)
            admin.screenshot("data-docs-offline", page=docs)
            # The validation's page, as a reader opens it (bootstrap-table's row click), then the suite's.
            docs.get_by_role("cell", name="run-1", exact=True).click()
            docs.wait_for_url(re.compile(r".*/data-docs/validations/.*\.html"))
            docs.wait_for_load_state("networkidle")
            assert "run-1" in docs.content() and "example.com" not in docs.content()
            assert admin.errors == [] and admin.blocked == [], (admin.errors, admin.blocked)
            admin.screenshot("data-docs-validation-offline", page=docs)
            docs.goto(f"{base}/storesync/data-docs/expectations/storesync_orders.html")
            docs.wait_for_load_state("networkidle")
            assert "is a known ISO 4217 currency code" in docs.content()
            assert admin.errors == [] and admin.blocked == [], (admin.errors, admin.blocked)
        finally:
            admin.close()

        # ---- a viewer reads but may not replay ----------------------------------------------------
        viewer_token = _token(stack, *USERS["viewer"])
        viewer = Browser(playwright, base)
        try:
            viewer.context.add_cookies([{"name": "_token", "value": viewer_token, "url": base}])
            viewer.page.goto(f"{base}/storesync/")
            assert _metrics(viewer.page)["dead-total"] == expected["dead"]
            assert viewer.page.locator("#dead button[data-action]").count() == 0
            assert "needs the right to trigger" in viewer.page.content()
            viewer.screenshot("storesync-viewer")
        finally:
            viewer.close()
        refused = requests.post(f"{base}/storesync/api/actions/replay", json={"ids": chosen, "dry_run": True},
                                headers={"Authorization": f"Bearer {viewer_token}"}, timeout=30)
        assert refused.status_code == 403, refused.text
        runs = stack.dag_runs(REPLAY_DAG)
        assert [r["dag_run_id"] for r in runs] == [run_id], "only the admin's action started a run"

