"""DAG tests: Airflow's metadata database is migrated once per session (SQLite, private home)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def airflow_db():
    from airflow.utils import db

    db.initdb()
    return True


@pytest.fixture
def store_env(tmp_path, monkeypatch, emulator):
    """A demo store, a ledger and both vendors (the emulator) wired through STORESYNC_* settings."""
    from datetime import datetime

    from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

    warehouse = f"sqlite:///{tmp_path / 'store.db'}"
    end = datetime(2026, 11, 20)
    generate_demo_store(warehouse, DemoStoreSpec(orders=600, seed=7, end=end, days=5, bad_share=0.0))
    env = {
        "STORESYNC_WAREHOUSE_URL": warehouse,
        "STORESYNC_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "STORESYNC_SENDLANE_BASE_URL": emulator.sendlane_url,
        "STORESYNC_SENDLANE_API_TOKEN": emulator.sendlane_api_token,
        "STORESYNC_SENDLANE_INTEGRATION_TOKEN": emulator.sendlane_integration_token,
        "STORESYNC_SENDLANE_BUDGET_PER_MINUTE": "6000",
        "STORESYNC_SAILTHRU_BASE_URL": emulator.sailthru_url,
        "STORESYNC_SAILTHRU_API_KEY": emulator.sailthru_api_key,
        "STORESYNC_SAILTHRU_SECRET": emulator.sailthru_secret,
        "STORESYNC_CONFIG": str(tmp_path / "none.toml"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    emulator.configure(rate_limits_enabled=False)
    return {"end": end, "emulator": emulator, **env}
