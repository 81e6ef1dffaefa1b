"""Id-chunk reads: the IN list is padded to a few lengths, so a long pass keeps a handful of
prepared statements, not one per chunk length (each held by the driver's statement cache)."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import event

from storesync.core.config import DEFAULT_MODELS_DIR
from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store
from storesync.warehouse.models import Warehouse, padded_ids


def test_padding_repeats_the_last_id_up_to_a_power_of_two():
    assert padded_ids([]) == []
    assert padded_ids([5]) == [5] * 64
    ids = list(range(1, 101))
    padded = padded_ids(ids)
    assert len(padded) == 128 and padded[:100] == ids and set(padded[100:]) == {100}
    assert len(padded_ids(list(range(128)))) == 128
    assert len(padded_ids(list(range(129)))) == 256


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('wh') / 'store.db'}"
    generate_demo_store(url, DemoStoreSpec(orders=800, seed=3, end=datetime(2024, 5, 1), days=20))
    wh = Warehouse(url, DEFAULT_MODELS_DIR)
    yield wh
    wh.engine.dispose()


def test_chunks_of_every_length_share_a_few_statements_and_return_each_row_once(warehouse):
    texts = set()

    def seen(conn, cursor, statement, parameters, context, executemany):
        texts.add(statement)

    event.listen(warehouse.engine, "before_cursor_execute", seen)
    try:
        for n in range(70, 600, 7):  # 76 chunk lengths
            ids = list(range(1, n + 1))
            orders = warehouse.for_ids("orders", ids)
            assert sorted(orders["order_id"]) == sorted(set(orders["order_id"]))  # no row twice
            assert set(orders["order_id"]) <= set(ids) and len(orders) >= 0.9 * n
    finally:
        event.remove(warehouse.engine, "before_cursor_execute", seen)
    assert len(texts) == 4  # 128, 256, 512 and 1024 parameters
