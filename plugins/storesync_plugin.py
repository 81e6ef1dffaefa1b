"""The Storesync view in the Airflow UI: a "Storesync" entry in the navigation that opens what
the ledger knows (deliveries, budgets, watermarks, runs, dead letters, quarantine, LTV).

Airflow 3 mounts ``fastapi_apps`` under its api-server and lists ``external_views`` in the UI's
navigation (shown in a frame). The app lives in ``storesync.ui`` (installed with storesync); the
page's script, style sheet and the assets the GX Data Docs need are served from this folder's
``storesync_ui/static``. Enable it by putting this file and ``storesync_ui/`` in Airflow's plugins
folder (``[core] plugins_folder``); see docs/ui.md.
"""

from __future__ import annotations

from pathlib import Path

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/storesync"
STATIC_DIR = Path(__file__).resolve().parent / "storesync_ui" / "static"


def _app():
    from storesync.ui.app import UIConfig, create_app

    return create_app(UIConfig.from_environment(STATIC_DIR))


class StoresyncPlugin(AirflowPlugin):
    name = "storesync"
    fastapi_apps = [{"app": _app(), "url_prefix": URL_PREFIX, "name": "Storesync"}]
    external_views = [{
        "name": "Storesync",
        "href": URL_PREFIX.lstrip("/") + "/",  # relative: the UI resolves it against its base URL
        "destination": "nav",
        "url_route": "storesync",  # the UI shows the page at /plugin/storesync, in a frame
        "nav_top_level": True,
    }]
