"""The demo store's warehouse tables (SQLAlchemy Core).

These describe the *demo* store only. A real store keeps its own schema; the SQL models in
``include/sql/`` are what adapt it to the columns the sync needs. Money is NUMERIC(12,2):
decimal currency units, never float.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
)

metadata = MetaData()

MONEY = Numeric(12, 2, asdecimal=True)

customers = Table(
    "customers",
    metadata,
    Column("customer_id", Integer, primary_key=True, autoincrement=False),
    Column("email", String(320)),
    Column("first_name", String(100)),
    Column("last_name", String(100)),
    Column("phone", String(40)),
    Column("company", String(200)),
    Column("address_1", String(200)),
    Column("city", String(100)),
    Column("state", String(100)),
    Column("state_code", String(10)),
    Column("country", String(100)),
    Column("country_code", String(2)),
    Column("postal_code", String(20)),
    Column("accepts_marketing", Boolean, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_customers_updated_at", "updated_at"),
)

products = Table(
    "products",
    metadata,
    Column("product_id", Integer, primary_key=True, autoincrement=False),
    Column("sku", String(64), nullable=False),
    Column("title", String(200), nullable=False),
    Column("description", Text),
    Column("brand", String(100)),
    Column("category", String(100)),
    Column("url", String(500)),
    Column("image_url", String(500)),
    Column("price", MONEY, nullable=False),
    Column("compare_at_price", MONEY),
    Column("inventory", Integer),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_products_updated_at", "updated_at"),
)

product_variants = Table(
    "product_variants",
    metadata,
    Column("variant_id", Integer, primary_key=True, autoincrement=False),
    Column("product_id", Integer, ForeignKey("products.product_id"), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("title", String(200), nullable=False),
    Column("price", MONEY, nullable=False),
    Index("ix_product_variants_product_id", "product_id"),
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", Integer, primary_key=True, autoincrement=False),
    Column("customer_id", Integer),  # no FK: real warehouses have orphans, the quality gate finds them
    Column("email", String(320)),
    Column("status", String(20), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("subtotal", MONEY, nullable=False),
    Column("total_tax", MONEY, nullable=False),
    Column("total_discounts", MONEY, nullable=False),
    Column("discount_code", String(40)),
    Column("total", MONEY, nullable=False),
    Column("payment_method", String(40)),
    Column("sailthru_bid", String(64)),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_orders_updated_at", "updated_at"),
    # Leads with customer_id (per-customer lookups) and covers the LTV query, which then reads
    # each customer's orders in order from the index alone: no sort, no table reads.
    # currency: LTV converts each order by its currency before summing; without it here every
    # order of a recomputed customer is a table read.
    Index("ix_orders_customer_ltv", "customer_id", "created_at", "status", "total", "currency"),
)

order_lines = Table(
    "order_lines",
    metadata,
    Column("line_id", Integer, primary_key=True, autoincrement=False),
    Column("order_id", Integer, nullable=False),
    Column("product_id", Integer),
    Column("variant_id", Integer),
    Column("sku", String(64)),
    Column("product_name", String(200)),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", MONEY, nullable=False),
    Column("line_total", MONEY, nullable=False),
    # When the line was recorded: what lets a window find lines whose order is missing (orphans)
    # without reading every line (include/sql/orphan_order_lines.sql).
    Column("created_at", DateTime),
    Index("ix_order_lines_order_id", "order_id"),
    Index("ix_order_lines_created_at", "created_at"),
)

# Every status an order has been in, with when: the source of exact, ordered status events.
order_status_history = Table(
    "order_status_history",
    metadata,
    Column("history_id", Integer, primary_key=True, autoincrement=False),
    Column("order_id", Integer, nullable=False),
    Column("status", String(20), nullable=False),
    Column("changed_at", DateTime, nullable=False),
    Index("ix_order_status_history_changed_at", "changed_at"),
    Index("ix_order_status_history_order_id", "order_id"),
)

checkouts = Table(
    "checkouts",
    metadata,
    Column("checkout_id", Integer, primary_key=True, autoincrement=False),
    Column("customer_id", Integer),
    Column("email", String(320)),
    Column("status", String(20), nullable=False),  # open | completed | expired
    Column("checkout_url", String(500)),
    Column("currency", String(3), nullable=False),
    Column("subtotal", MONEY, nullable=False),
    Column("total_tax", MONEY, nullable=False),
    Column("total", MONEY, nullable=False),
    Column("order_id", Integer),  # set when the checkout became an order
    Column("sailthru_bid", String(64)),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_checkouts_updated_at", "updated_at"),
)

checkout_lines = Table(
    "checkout_lines",
    metadata,
    Column("checkout_line_id", Integer, primary_key=True, autoincrement=False),
    Column("checkout_id", Integer, nullable=False),
    Column("product_id", Integer),
    Column("sku", String(64)),
    Column("product_name", String(200)),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", MONEY, nullable=False),
    Column("line_total", MONEY, nullable=False),
    Index("ix_checkout_lines_checkout_id", "checkout_id"),
)

# Storefront events as Segment loads its track calls into a warehouse (one table of every event,
# properties flattened into columns). The demo writes "Product Viewed" and "Product Added".
tracks = Table(
    "tracks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("event", String(100), nullable=False),
    Column("anonymous_id", String(64)),
    Column("user_id", String(64)),
    Column("context_traits_email", String(320)),
    Column("product_id", String(64)),
    Column("sku", String(64)),
    Column("name", String(200)),
    Column("price", MONEY),
    Column("quantity", Integer),
    Column("currency", String(3)),
    Column("url", String(500)),
    Column("cart_id", String(64)),
    Column("timestamp", DateTime, nullable=False),
    Index("ix_tracks_timestamp", "timestamp"),
)

ORDER_STATUSES = ("cancelled", "completed", "failed", "fulfilled", "pending", "processing", "refunded")
