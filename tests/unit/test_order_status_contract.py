"""Order statuses are part of the models contract: a model returning its store's own words (NEW,
SHIPPED, CANCELED) fails ``storesync models check`` with the values, their counts and the allowed
list; the gate's failure then points at the model instead of a threshold, and a dry run still prints
its whole JSON (the failure, the reasons, masked quarantined rows) on stdout."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from acme_store import AcmeStore, write_models

from storesync.cli import main
from storesync.quality.checks import ORDER_STATUSES
from storesync.run_report import gate_failure_text
from storesync.warehouse import contract

DAY = datetime(2026, 11, 10)


@pytest.fixture
def own_words(tmp_path):
    """An Acme store whose orders carry the store's own status words, and a settings file for it."""
    store = AcmeStore(f"sqlite:///{tmp_path / 'acme.db'}")
    store.customer(1, DAY)
    store.product(1, DAY)
    for n, state in enumerate(("NEW", "NEW", "SHIPPED", "CANCELED"), start=1):
        store.order(n, 1, DAY + timedelta(hours=n), state=state)
    models = write_models(tmp_path / "models")
    config = tmp_path / "storesync.toml"
    config.write_text(f'warehouse_url = "{store.url}"\nledger_url = "sqlite:///{tmp_path / "ledger.db"}"\n'
                      f'models_dir = "{models}"\n')
    yield str(config)
    store.dispose()


WINDOW = ["--start", "2026-11-10", "--end", "2026-11-11"]


def test_the_gate_and_the_contract_share_one_list():
    assert contract.contract_for("orders").column("status").values == ORDER_STATUSES
    readme = contract.render_markdown()
    assert "- `orders.status`: " + ", ".join(f"`{s}`" for s in ORDER_STATUSES) in readme


def test_models_check_reports_statuses_outside_the_contract(own_words, capsys):
    assert main(["--config", own_words, "models", "check", "--model", "order_changes", "--model", "orders",
                 "--json", *WINDOW]) == 1
    report = json.loads(capsys.readouterr().out)
    orders = report["models"]["orders"]
    assert orders["status"] == "violation"
    assert orders["unknown_values"]["status"] == {
        "rows": 4, "values": {"NEW": 2, "SHIPPED": 1, "CANCELED": 1}, "allowed": list(ORDER_STATUSES)}
    assert all("@" not in str(s.get("email")) or "***@" in s["email"] for s in orders["samples"])
    assert report["models"]["order_changes"]["status"] == "ok"  # other statuses there just send nothing

    assert main(["--config", own_words, "models", "check", "--model", "order_changes", "--model", "orders",
                 *WINDOW]) == 1
    text = capsys.readouterr().out
    assert "status: 4 value(s) outside the contract ('NEW' ×2, 'SHIPPED' ×1, 'CANCELED' ×1); allowed: " \
           "cancelled, completed" in text
    assert "every model keeps the contract" not in text


def test_a_dry_run_whose_gate_fails_prints_its_json_and_points_at_the_model(own_words, capsys):
    assert main(["--config", own_words, "sync", "--dry-run", "--json", *WINDOW]) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out)  # the whole of stdout
    [failure] = summary["gate_failures"]
    assert (failure["entity"], failure["share"], failure["rows_in"]) == ("orders", 1.0, 4)
    assert summary["rows"]["orders"]["reasons"] == {"status_known": 4}
    assert summary["rows"]["products"]["passed"] == 1, "the other entities are still planned and shown"
    samples = summary["quarantine_samples"]["orders"]
    assert samples and all("status_known" in " ".join(s["reasons"]) for s in samples)
    assert all(s["row"]["email"] == "c***@example.com" for s in samples)
    assert "Lovelace" not in captured.out and "c1@example.com" not in captured.out
    assert "raising the threshold is not the fix" in captured.err
    assert "models check --model orders" in captured.err
    assert "= 1.05" not in captured.err


def test_a_suggested_threshold_never_passes_one():
    failure = {"entity": "orders", "share": 0.97, "rows_in": 100, "message": "quality gate failed",
               "top_reasons": [["currency_known", 40], ["email_valid", 30], ["total_matches", 27]]}
    assert gate_failure_text(failure).endswith("[quarantine_thresholds] orders = 1)")
    failure.update(share=0.07, top_reasons=[["email_valid", 7]])
    assert gate_failure_text(failure).endswith("[quarantine_thresholds] orders = 0.1)")


def test_an_airflow_task_stopped_by_such_a_model_points_at_the_model(own_words):
    from storesync.core.config import load_settings
    from storesync.core.windows import Window
    from storesync.pipeline.jobs import open_context, plan_entity
    from storesync.provider.failures import QUARANTINE, explain
    from storesync.quality.errors import QualityGateError

    settings = load_settings(own_words)
    settings = settings.with_overrides(sendlane=type(settings.sendlane)(api_token="t", integration_token="t"),
                                       sailthru=type(settings.sailthru)(api_key="k", secret="s"))
    ctx = open_context(settings, run_id="hourly", sync_name="order_events")
    with pytest.raises(QualityGateError) as caught:
        plan_entity(ctx, "orders", Window(DAY, DAY + timedelta(days=1)))
    failure = explain(caught.value)
    assert failure.kind == QUARANTINE
    assert failure.next_step.startswith("fix the orders model: most rows fail status_known")
    assert "quarantine_thresholds" not in failure.next_step
