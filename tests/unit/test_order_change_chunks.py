"""Order changes come in chunks that never split an order, and a window smaller than a chunk is
one chunk: each chunk is a quality-gate batch, whose fixed cost an hourly run pays per chunk."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from storesync.core.windows import Window
from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store
from storesync.warehouse.models import Warehouse

END = datetime(2026, 3, 2)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    from storesync.core.config import Settings

    url = f"sqlite:///{tmp_path_factory.mktemp('chunks') / 'store.db'}"
    generate_demo_store(url, DemoStoreSpec(orders=300, seed=5, end=END, days=2, bad_share=0.0))
    return Warehouse(url, Settings().models_dir)


def test_a_window_smaller_than_a_chunk_is_one_chunk(warehouse):
    window = Window(END - timedelta(hours=6), END)
    chunks = list(warehouse.stream_order_changes(window, 20_000))
    assert len(chunks) == 1 and chunks[0]["order_id"].nunique() > 1


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 50])
def test_chunks_hold_every_change_once_and_never_split_an_order(warehouse, chunk_size):
    window = Window(END - timedelta(days=1), END)
    (whole,) = list(warehouse.stream_order_changes(window, 100_000))
    chunks = list(warehouse.stream_order_changes(window, chunk_size))
    seen = [set(c["order_id"]) for c in chunks]
    assert all(len(c) for c in chunks)
    for i, ids in enumerate(seen):  # no order in two chunks
        assert not ids & set().union(*seen[:i]), f"chunk {i} repeats an order"
    rows = sorted(map(tuple, (r for c in chunks for r in c.astype(str).itertuples(index=False))))
    assert rows == sorted(map(tuple, whole.astype(str).itertuples(index=False)))
    if chunk_size >= 7:  # chunks stay near their size: only an order's own changes push one over
        assert len(chunks) >= len(whole) // (chunk_size + 10)
