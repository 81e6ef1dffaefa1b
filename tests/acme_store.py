"""A store whose warehouse is not the demo's, for tests that must hold on any schema.

"Acme" keeps its own table and column names, no status-history table (its order changes are
synthesised from the orders), ISO 8601 text timestamps with a ``T`` (as JSON loads and Segment
exports write them), and a Segment-style ``tracks`` table of storefront events. ``write_models``
writes the SQL models that adapt it, the way a user would; ``AcmeStore`` writes its rows.

Import it from a test: ``from acme_store import AcmeStore`` (``tests/`` is on ``sys.path``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import create_engine, text

DDL = (
    "CREATE TABLE acme_customers (cust_no INTEGER PRIMARY KEY, mail TEXT, given TEXT, family TEXT,"
    " opted_in INTEGER, joined TEXT, touched TEXT)",
    "CREATE TABLE acme_products (prod_no INTEGER PRIMARY KEY, code TEXT, name TEXT, page TEXT, picture TEXT,"
    " list_price NUMERIC(12, 2), added TEXT, touched TEXT)",
    "CREATE TABLE acme_orders (ord_no INTEGER PRIMARY KEY, cust_no INTEGER, mail TEXT, state TEXT, cur TEXT,"
    " net NUMERIC(12, 2), tax NUMERIC(12, 2), disc NUMERIC(12, 2), gross NUMERIC(12, 2), placed TEXT,"
    " touched TEXT)",
    "CREATE TABLE acme_items (item_no INTEGER PRIMARY KEY, ord_no INTEGER, prod_no INTEGER, qty INTEGER,"
    " price NUMERIC(12, 2), amount NUMERIC(12, 2), logged TEXT)",
    "CREATE TABLE acme_carts (cart_no INTEGER PRIMARY KEY, cust_no INTEGER, mail TEXT, state TEXT, link TEXT,"
    " cur TEXT, net NUMERIC(12, 2), tax NUMERIC(12, 2), gross NUMERIC(12, 2), ord_no INTEGER, started TEXT,"
    " touched TEXT)",
    "CREATE TABLE acme_cart_items (row_no INTEGER PRIMARY KEY, cart_no INTEGER, prod_no INTEGER, qty INTEGER,"
    " price NUMERIC(12, 2), amount NUMERIC(12, 2))",
    # Segment's warehouse layout for track calls, flattened properties (as Segment loads them).
    "CREATE TABLE tracks (id TEXT PRIMARY KEY, event TEXT, anonymous_id TEXT, user_id TEXT,"
    " context_traits_email TEXT, product_id TEXT, variant TEXT, sku TEXT, name TEXT, price NUMERIC(12, 2),"
    " quantity INTEGER, currency TEXT, url TEXT, image_url TEXT, cart_id TEXT, \"timestamp\" TEXT)",
)

# A status at placement; any other is a later change (fulfilled, cancelled, refunded...).
PLACED_STATES = "('processing', 'pending')"

MODELS = {
    # No status history: the placement (seq 1, at `placed`) and, once the order has moved on, its
    # current state (seq 2, at `touched`). Never one row with the current state as seq 1: a refunded
    # order would then go out as a new purchase.
    "order_changes": f"""
-- Acme keeps no status history: placement + current state, timestamps are ISO text (use the _iso binds)
SELECT change_id, order_id, status, changed_at, seq FROM (
  SELECT CAST(ord_no AS TEXT) || ':placed' AS change_id, ord_no AS order_id, 'processing' AS status,
         placed AS changed_at, 1 AS seq
    FROM acme_orders
  UNION ALL
  SELECT CAST(ord_no AS TEXT) || ':' || state, ord_no, state, touched, 2
    FROM acme_orders WHERE state NOT IN {PLACED_STATES}
) c
WHERE changed_at >= :window_start_iso AND changed_at < :window_end_iso
ORDER BY order_id, seq""",
    "order_history": f"""
SELECT change_id, order_id, status, changed_at, seq FROM (
  SELECT CAST(ord_no AS TEXT) || ':placed' AS change_id, ord_no AS order_id, 'processing' AS status,
         placed AS changed_at, 1 AS seq
    FROM acme_orders
  UNION ALL
  SELECT CAST(ord_no AS TEXT) || ':' || state, ord_no, state, touched, 2
    FROM acme_orders WHERE state NOT IN {PLACED_STATES}
) c
WHERE order_id IN :order_ids AND changed_at < :window_end_iso
ORDER BY order_id, seq""",
    "orders": """
SELECT o.ord_no AS order_id, o.cust_no AS customer_id, o.mail AS email, o.state AS status, o.cur AS currency,
       o.net AS subtotal, o.tax AS total_tax, o.disc AS total_discounts, o.gross AS total,
       o.placed AS created_at, o.touched AS updated_at,
       COALESCE((SELECT SUM(i.amount) FROM acme_items i WHERE i.ord_no = o.ord_no), 0) AS lines_subtotal,
       c.given AS first_name, c.family AS last_name, c.opted_in AS accepts_marketing
  FROM acme_orders o LEFT JOIN acme_customers c ON c.cust_no = o.cust_no
 WHERE o.ord_no IN :order_ids
 ORDER BY o.ord_no""",
    "order_lines": """
SELECT i.item_no AS line_id, i.ord_no AS order_id, i.prod_no AS product_id, p.code AS sku,
       p.name AS product_name, i.qty AS quantity, i.price AS unit_price, i.amount AS line_total,
       p.page AS product_url, p.picture AS image_url,
       CASE WHEN o.ord_no IS NULL THEN 0 ELSE 1 END AS order_exists,
       CASE WHEN p.prod_no IS NULL THEN 0 ELSE 1 END AS product_exists
  FROM acme_items i
  LEFT JOIN acme_orders o ON o.ord_no = i.ord_no
  LEFT JOIN acme_products p ON p.prod_no = i.prod_no
 WHERE i.ord_no IN :order_ids
 ORDER BY i.ord_no, i.item_no""",
    "orphan_order_lines": """
SELECT i.item_no AS line_id, i.ord_no AS order_id, i.prod_no AS product_id, i.qty AS quantity,
       i.price AS unit_price, i.amount AS line_total, 0 AS order_exists,
       CASE WHEN p.prod_no IS NULL THEN 0 ELSE 1 END AS product_exists
  FROM acme_items i LEFT JOIN acme_products p ON p.prod_no = i.prod_no
 WHERE i.logged >= :window_start_iso AND i.logged < :window_end_iso
   AND NOT EXISTS (SELECT 1 FROM acme_orders o WHERE o.ord_no = i.ord_no)
 ORDER BY i.item_no""",
    "customers": """
SELECT cust_no AS customer_id, mail AS email, given AS first_name, family AS last_name,
       opted_in AS accepts_marketing, joined AS created_at, touched AS updated_at
  FROM acme_customers
 WHERE touched >= :window_start_iso AND touched < :window_end_iso
 ORDER BY cust_no""",
    "products": """
SELECT prod_no AS product_id, code AS sku, name AS title, page AS url, picture AS image_url,
       list_price AS price, added AS created_at, touched AS updated_at
  FROM acme_products
 WHERE touched >= :window_start_iso AND touched < :window_end_iso
 ORDER BY prod_no""",
    "checkouts": """
SELECT c.cart_no AS checkout_id, c.cust_no AS customer_id, c.mail AS email, c.state AS status,
       c.link AS checkout_url, c.cur AS currency, c.net AS subtotal, c.tax AS total_tax, c.gross AS total,
       c.ord_no AS order_id, c.started AS created_at, c.touched AS updated_at,
       COALESCE((SELECT SUM(i.amount) FROM acme_cart_items i WHERE i.cart_no = c.cart_no), 0) AS lines_subtotal
  FROM acme_carts c
 WHERE c.touched >= :window_start_iso AND c.touched < :window_end_iso
 ORDER BY c.cart_no""",
    "checkout_lines": """
SELECT row_no AS checkout_line_id, cart_no AS checkout_id, prod_no AS product_id, qty AS quantity,
       price AS unit_price, amount AS line_total
  FROM acme_cart_items WHERE cart_no IN :checkout_ids ORDER BY cart_no, row_no""",
    # Segment names its events "Product Viewed" / "Product Added"; timestamps end in "Z".
    "site_events": """
SELECT id AS event_id,
       CASE event WHEN 'Product Viewed' THEN 'product_viewed' WHEN 'Product Added' THEN 'added_to_cart'
            ELSE event END AS event_name,
       "timestamp" AS occurred_at, anonymous_id, user_id, context_traits_email AS email,
       product_id, variant AS variant_id, sku, name AS product_name, quantity, price, currency,
       url AS product_url, image_url, cart_id
  FROM tracks
 WHERE "timestamp" >= :window_start_iso AND "timestamp" < :window_end_iso
 ORDER BY "timestamp", id""",
}
# Acme has no variants: product_variants.sql is simply absent (the model is optional).


def write_models(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, sql in MODELS.items():
        (folder / f"{name}.sql").write_text(sql.strip() + "\n")
    return folder


def iso(moment: datetime) -> str:
    return moment.isoformat("T")


class AcmeStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        with self.engine.begin() as conn:
            for ddl in DDL:
                conn.execute(text(ddl))

    def dispose(self) -> None:
        self.engine.dispose()

    def _insert(self, table: str, **row) -> None:
        columns = ", ".join(f'"{c}"' for c in row)
        binds = ", ".join(f":{c}" for c in row)
        with self.engine.begin() as conn:
            conn.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({binds})"),
                         {k: (float(v) if isinstance(v, Decimal) else v) for k, v in row.items()})

    def customer(self, cust_no: int, at: datetime, *, mail: str | None = None) -> None:
        self._insert("acme_customers", cust_no=cust_no, mail=mail or f"c{cust_no}@example.com", given="Ada",
                     family="Lovelace", opted_in=1, joined=iso(at), touched=iso(at))

    def product(self, prod_no: int, at: datetime, price: str = "12.50") -> None:
        self._insert("acme_products", prod_no=prod_no, code=f"ACME-{prod_no}", name=f"Anvil {prod_no}",
                     page=f"https://acme.example/p/{prod_no}", picture=f"https://acme.example/p/{prod_no}.jpg",
                     list_price=Decimal(price), added=iso(at), touched=iso(at))

    def order(self, ord_no: int, cust_no: int, placed: datetime, *, state: str = "processing",
              touched: datetime | None = None, prod_no: int = 1, qty: int = 2, price: str = "12.50") -> None:
        amount = Decimal(price) * qty
        self._insert("acme_orders", ord_no=ord_no, cust_no=cust_no, mail=f"c{cust_no}@example.com", state=state,
                     cur="USD", net=amount, tax=Decimal("0.00"), disc=Decimal("0.00"), gross=amount,
                     placed=iso(placed), touched=iso(touched or placed))
        self.item(ord_no * 10, ord_no, placed, prod_no=prod_no, qty=qty, price=price)

    def item(self, item_no: int, ord_no: int, logged: datetime, *, prod_no: int = 1, qty: int = 2,
             price: str = "12.50") -> None:
        self._insert("acme_items", item_no=item_no, ord_no=ord_no, prod_no=prod_no, qty=qty,
                     price=Decimal(price), amount=Decimal(price) * qty, logged=iso(logged))

    def track(self, event_id: str, event: str, at: datetime, *, email: str | None = "c1@example.com",
              product_id: str = "1", cart_id: str | None = None, quantity: int | None = None,
              price: str | None = None) -> None:
        self._insert("tracks", id=event_id, event=event, anonymous_id=f"anon-{event_id}", user_id=None,
                     context_traits_email=email, product_id=product_id, variant=None, sku=f"ACME-{product_id}",
                     name=f"Anvil {product_id}", price=Decimal(price) if price else None, quantity=quantity,
                     currency="USD" if price else None, url=f"https://acme.example/p/{product_id}",
                     image_url=f"https://acme.example/p/{product_id}.jpg", cart_id=cart_id,
                     timestamp=at.isoformat("T") + ".000Z")
