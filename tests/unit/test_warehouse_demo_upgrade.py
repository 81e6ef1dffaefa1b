"""An old demo store (written before the schema gained what the models read) is written again by
`make run`, and only the demo's own file: a user's database is never replaced."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import create_engine, text

from storesync.cli import _current_demo
from storesync.core.config import Settings
from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store, is_current_demo_store


def test_an_old_demo_store_is_made_again_and_a_users_database_never(tmp_path, capsys):
    demo = tmp_path / "demo_store.db"
    url = f"sqlite:///{demo}"
    generate_demo_store(url, DemoStoreSpec(orders=50, seed=1, end=datetime(2026, 11, 20), days=3))
    settings = Settings(data_dir=tmp_path, warehouse_url=url, ledger_url=f"sqlite:///{tmp_path / 'l.db'}")
    assert is_current_demo_store(url) and _current_demo(settings, demo)

    engine = create_engine(url)
    with engine.begin() as conn:  # as an older storesync wrote it
        conn.execute(text("DROP INDEX ix_order_lines_created_at"))
        conn.execute(text("ALTER TABLE order_lines DROP COLUMN created_at"))
        conn.execute(text("DROP TABLE tracks"))
    engine.dispose()
    assert not is_current_demo_store(url)
    assert not _current_demo(settings, demo)
    assert "older storesync" in capsys.readouterr().err

    # The same tables in a file of the user's: left alone.
    mine = tmp_path / "shop.db"
    demo.rename(mine)
    users = Settings(data_dir=tmp_path, warehouse_url=f"sqlite:///{mine}", ledger_url=settings.ledger_url)
    assert _current_demo(users, Path(mine))
