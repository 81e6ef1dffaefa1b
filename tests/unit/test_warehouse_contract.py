"""The models contract: written once, rendered into the README, enforced on every model's result."""

from __future__ import annotations

import shutil
from datetime import datetime

import pytest
from sqlalchemy import create_engine, text

from storesync.core.config import DEFAULT_MODELS_DIR
from storesync.core.errors import ConfigurationError
from storesync.core.windows import Window
from storesync.warehouse import contract
from storesync.warehouse.models import Warehouse, binds_in, escape_literals


def test_readme_holds_the_contract_as_generated():
    readme = (DEFAULT_MODELS_DIR / "README.md").read_text()
    assert contract.readme_section(readme) == contract.render_markdown(), (
        "include/sql/README.md is out of date: run `python -m storesync.warehouse.contract`")


def test_every_shipped_model_names_its_required_columns():
    """The shipped SQL is the reference users copy: it names every required column (running them
    is test_warehouse_check's job)."""
    for name, spec in contract.CONTRACTS.items():
        path = DEFAULT_MODELS_DIR / spec.filename
        if spec.group != "sync" or not path.is_file():
            continue
        sql = path.read_text()
        missing = [c for c in spec.required_columns if c not in sql]
        assert not missing, (name, missing)


def _store(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE cust (id INTEGER, mail TEXT, touched TEXT, born TEXT)"))
        conn.execute(text("INSERT INTO cust VALUES (1, 'a@example.com', '2026-11-20T10:30:00', '2026-01-01T00:00:00')"))
    return url, engine


def _models(tmp_path, **sql):
    models = tmp_path / "models"
    shutil.copytree(DEFAULT_MODELS_DIR, models)
    for name, body in sql.items():
        (models / f"{name}.sql").write_text(body)
    return models


def test_a_missing_required_column_names_model_column_and_file(tmp_path):
    url, _ = _store(tmp_path)
    models = _models(tmp_path, customers="SELECT id AS customer_id, touched AS updated_at, born AS created_at "
                                         "FROM cust WHERE touched >= :window_start_iso AND touched < :window_end_iso")
    wh = Warehouse(url, models)
    with pytest.raises(contract.ModelContractError) as err:
        list(wh.stream("customers", Window(datetime(2026, 11, 20, 10), datetime(2026, 11, 20, 11)), 100))
    message = str(err.value)
    assert "customers" in message and "email" in message and str(models / "customers.sql") in message
    # On a quiet window too: the model is wrong whether or not it has rows.
    with pytest.raises(contract.ModelContractError, match="email"):
        list(wh.stream("customers", Window(datetime(2026, 1, 1), datetime(2026, 1, 2)), 100))


def test_missing_optional_columns_read_as_null(tmp_path):
    url, _ = _store(tmp_path)
    models = _models(tmp_path, customers="SELECT id AS customer_id, mail AS email, touched AS updated_at, "
                                         "born AS created_at FROM cust "
                                         "WHERE touched >= :window_start_iso AND touched < :window_end_iso")
    frame = next(Warehouse(url, models).stream(
        "customers", Window(datetime(2026, 11, 20, 10), datetime(2026, 11, 20, 11)), 100))
    assert frame["first_name"].tolist() == [None] and frame["accepts_marketing"].tolist() == [None]
    assert frame["updated_at"].tolist() == [datetime(2026, 11, 20, 10, 30)]


def test_a_value_of_the_wrong_type_fails_without_showing_it(tmp_path):
    url, _ = _store(tmp_path)
    models = _models(tmp_path, customers="SELECT id AS customer_id, mail AS email, mail AS updated_at, "
                                         "born AS created_at FROM cust")
    with pytest.raises(contract.ModelContractError) as err:
        list(Warehouse(url, models).stream("customers", Window(datetime(2026, 1, 1), datetime(2026, 1, 2)), 100))
    assert "updated_at" in str(err.value) and "customers.sql" in str(err.value)
    assert "a@example.com" not in str(err.value)


def test_a_required_model_missing_its_chunk_bind_is_refused_an_optional_one_is_not(tmp_path):
    url, engine = _store(tmp_path)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE variants (v INTEGER, p INTEGER)"))
        conn.execute(text("INSERT INTO variants VALUES (10, 1), (20, 2)"))
    models = _models(tmp_path, product_variants=(
        "-- a store with few variants reads them all: no :product_ids here\n"
        "SELECT v AS variant_id, p AS product_id, 'S' AS sku, 'T' AS title, 1.5 AS price FROM variants"))
    frame = Warehouse(url, models).for_ids("product_variants", [2])
    assert frame["variant_id"].tolist() == [20], "rows of other products are left out"
    (models / "product_variants.sql").unlink()
    assert Warehouse(url, models).for_ids("product_variants", [2]).empty
    (models / "orders.sql").write_text("SELECT 1 AS order_id")
    with pytest.raises(ConfigurationError, match=r"orders .*must filter on :order_ids"):
        Warehouse(url, models).for_ids("orders", [1])


def test_a_colon_word_in_a_literal_or_comment_is_not_a_bind(tmp_path):
    sql = ("SELECT ':x' AS a, 'it''s :y' AS b, \"odd:name\" AS c -- :z\n"
           "/* :w */ FROM t WHERE s >= :window_start AND s::date < CAST(:window_end AS date)")
    assert binds_in(sql) == {"window_start", "window_end"}
    url, _ = _store(tmp_path)
    models = _models(tmp_path, customers=(
        "-- customers touched in the window (:window_start is compared with ISO text: use the _iso bind)\n"
        "SELECT id AS customer_id, mail AS email, touched AS updated_at, born AS created_at,\n"
        "       'opens at 10:30' AS company /* :company */\n"
        "  FROM cust WHERE touched >= :window_start_iso AND touched < :window_end_iso"))
    frame = next(Warehouse(url, models).stream(
        "customers", Window(datetime(2026, 11, 20, 10), datetime(2026, 11, 20, 11)), 100))
    assert frame["company"].tolist() == ["opens at 10:30"]
    assert escape_literals("SELECT 'a:b'") == "SELECT 'a\\:b'"


def test_register_adds_a_model_and_validates_types():
    with pytest.raises(ValueError, match="unknown type"):
        contract.Column("x", "float")
    spec = contract.register(contract.ModelContract(
        "test_only_model", "thing", "a test", (contract.req("thing_id", contract.ID),), group="test"))
    try:
        assert contract.contract_for("test_only_model") is spec
        assert "test_only_model" in contract.models_in("test")
        assert "test_only_model" not in contract.models_in("sync")
    finally:
        del contract.CONTRACTS["test_only_model"]
