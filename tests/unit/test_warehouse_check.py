"""`storesync models check` (issue 17.5), as a user runs it: on the demo store (SQLite and DuckDB)
and on a store of its own whose models are wrong in the ways users get them wrong."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import pytest
from acme_store import AcmeStore, write_models

from storesync.cli import main
from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

END = datetime(2026, 11, 20)


@pytest.fixture(autouse=True)
def _no_settings_file(tmp_path, monkeypatch):
    """Every setting at its default, the rest given on the command line."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STORESYNC_CONFIG", raising=False)


def _check(capsys, *args) -> tuple[int, str, str]:
    code = main(["models", "check", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("dialect", ["sqlite", "duckdb"])
def test_the_demo_store_keeps_the_contract_and_samples_are_masked(tmp_path, capsys, dialect):
    url = (f"sqlite:///{tmp_path / 'store.db'}" if dialect == "sqlite" else f"duckdb:///{tmp_path / 'store.duckdb'}")
    generate_demo_store(url, DemoStoreSpec(orders=300, seed=3, end=END, days=5, bad_share=0.01))
    code, out, err = _check(capsys, "--warehouse-url", url, "--end", END.isoformat(), "--json")
    result = json.loads(out)  # pure JSON: nothing else on stdout
    assert code == 0 and result["ok"], err
    models = result["models"]
    for name in ("order_changes", "orders", "order_lines", "order_history", "checkouts", "checkout_lines",
                 "site_events"):
        assert models[name]["status"] == "ok" and models[name]["rows"] > 0, name
        assert len(models[name]["samples"]) == 3
    assert models["orphan_order_lines"]["rows"] == 1  # the demo's orphan, in the last day
    order = models["orders"]["samples"][0]
    assert re.fullmatch(r"[a-z0-9]\*\*\*@[\w.]+", order["email"]), order["email"]
    assert order["first_name"] == order["last_name"] == order["address_1"] == "***"
    assert order["total"] and order["currency"] and order["city"] not in (None, "***")
    # The text report says the same.
    code, out, _ = _check(capsys, "--warehouse-url", url, "--end", END.isoformat())
    assert code == 0 and "every model keeps the contract" in out and "order_changes" in out


@pytest.fixture
def acme(tmp_path):
    store = AcmeStore(f"sqlite:///{tmp_path / 'acme.db'}")
    models = write_models(tmp_path / "models")
    day = datetime(2026, 11, 10)
    # Customers the day before, in 10:00-11:00 and after it.
    for n, at in enumerate((day - timedelta(hours=20), day.replace(hour=10), day.replace(hour=18)), start=1):
        store.customer(n, at.replace(minute=30))
    store.product(1, day)
    store.order(1, 1, day.replace(hour=10, minute=15))
    yield store, models
    store.dispose()


def test_a_window_bind_compared_with_iso_text_is_caught_as_zero_rows_between_rows(acme, capsys):
    store, models = acme
    # The trap: ISO 'T' text compared with :window_start ('2026-11-10 10:00:00' on SQLite).
    (models / "customers.sql").write_text(
        (models / "customers.sql").read_text().replace(":window_start_iso", ":window_start")
        .replace(":window_end_iso", ":window_end"))
    args = ("--warehouse-url", store.url, "--models-dir", str(models), "--start", "2026-11-10T10:00:00",
            "--end", "2026-11-10T11:00:00", "--json")
    code, out, _ = _check(capsys, *args)
    customers = json.loads(out)["models"]["customers"]
    assert customers["rows"] == 0 and customers["status"] == "warning"
    assert "window_start_iso" in customers["warnings"][0]
    assert code == 0, "a warning is not a contract violation"
    # With the ISO binds the model returns its row, and no warning.
    write_models(models)
    code, out, _ = _check(capsys, *args)
    customers = json.loads(out)["models"]["customers"]
    assert (customers["rows"], customers["status"], code) == (1, "ok", 0)
    assert json.loads(out)["models"]["product_variants"]["status"] == "absent"  # Acme has none: fine


def test_violations_name_model_and_column_and_exit_1(acme, capsys):
    store, models = acme
    (models / "orders.sql").write_text((models / "orders.sql").read_text().replace(" AS currency,", " AS money_code,"))
    (models / "customers.sql").write_text((models / "customers.sql").read_text()
                                          .replace("given AS first_name", "given AS first_name, 'n/a' AS accepts_marketing")
                                          .replace("opted_in AS accepts_marketing,", ""))
    args = ("--warehouse-url", store.url, "--models-dir", str(models), "--start", "2026-11-10T00:00:00",
            "--end", "2026-11-11T00:00:00")
    code, out, _ = _check(capsys, *args, "--json")
    result = json.loads(out)
    assert code == 1 and not result["ok"]
    orders = result["models"]["orders"]
    assert orders["status"] == "violation" and orders["missing_required"] == ["currency"]
    assert orders["extra"] == ["money_code"] and orders["samples"][0]["money_code"] == "***"
    customers = result["models"]["customers"]
    assert customers["status"] == "violation" and "accepts_marketing" in customers["type_errors"]
    assert "n/a" not in out, "values of the wrong type are counted, never shown"
    code, text_out, _ = _check(capsys, *args)
    assert code == 1 and "contract violations in: orders, customers" in text_out.replace("customers, orders",
                                                                                          "orders, customers")


def test_bad_sql_is_a_violation_naming_the_file(acme, capsys):
    store, models = acme
    (models / "checkouts.sql").write_text("SELECT cart_no FROM nowhere WHERE x >= :window_start")
    code, out, _ = _check(capsys, "--warehouse-url", store.url, "--models-dir", str(models),
                          "--end", "2026-11-11T00:00:00", "--json", "--model", "checkouts")
    checkouts = json.loads(out)["models"]["checkouts"]
    assert code == 1 and checkouts["status"] == "violation" and "nowhere" in checkouts["error"]
    assert checkouts["file"].endswith("checkouts.sql")
    assert list(json.loads(out)["models"]) == ["checkouts"]


def test_an_unknown_model_is_bad_input(acme, capsys):
    store, models = acme
    code, _, err = _check(capsys, "--warehouse-url", store.url, "--models-dir", str(models),
                          "--end", "2026-11-11T00:00:00", "--model", "ordres")
    assert code == 2 and "ordres" in err and "order_changes" in err


def test_check_without_end_finds_the_window_from_the_models(acme, capsys):
    store, models = acme
    code, out, _ = _check(capsys, "--warehouse-url", store.url, "--models-dir", str(models), "--json")
    result = json.loads(out)
    assert code == 0 and result["window"]["end"] == (datetime(2026, 11, 10, 11)).isoformat()
    assert result["window"]["start"] == (datetime(2026, 11, 10, 11) - timedelta(hours=24)).isoformat()


def test_an_absent_ltv_model_says_the_ltv_job_needs_it_or_the_setting_that_drops_it(acme, capsys, tmp_path):
    """Acme keeps no FX rates and no status history: not "read as no rows" (the LTV job refuses to
    run without a file its [ltv] settings name), but what to write or set; once set to "", not used."""
    store, models = acme
    for name in ("fx_rates", "ltv_order_status_changes"):
        (models / f"{name}.sql").unlink(missing_ok=True)
    args = ("--warehouse-url", store.url, "--models-dir", str(models), "--end", "2026-11-11T00:00:00", "--json")
    code, out, _ = _check(capsys, *args)
    result = json.loads(out)["models"]
    fx, history = result["fx_rates"], result["ltv_order_status_changes"]
    assert code == 0 and fx["status"] == history["status"] == "absent"
    assert "storesync ltv` reads it while [ltv] fx_rates_model names it" in fx["warnings"][0]
    assert 'fx_rates_model = ""' in fx["warnings"][0] and "[ltv] currency" in fx["warnings"][0]
    assert 'status_history_model = ""' in history["warnings"][0]

    (tmp_path / "storesync.toml").write_text('[ltv]\nfx_rates_model = ""\ncurrency = "EUR"\n')
    code, out, _ = _check(capsys, *args)  # the working folder's storesync.toml
    assert json.loads(out)["models"]["fx_rates"]["warnings"] == ['not present and not used ([ltv] fx_rates_model = "")']
