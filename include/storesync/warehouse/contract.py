"""The models contract: what each warehouse model must (and may) return, written once.

A model is a SQL file a user adapts to their own schema; this module is the one place that says
which output columns each model owes, of which type, and which binds it takes. The code that reads
models (``storesync.warehouse.models``) checks every result against it, ``storesync models check``
runs every model against it, and the table in ``include/sql/README.md`` is generated from it
(``render_markdown``; a test keeps the two equal).

Other parts register their own models with ``register`` (LTV does), so the contract stays in one
registry whatever reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from storesync.core.errors import ConfigurationError

# Column types, as the frames hand them on (``storesync.warehouse.models.normalise``):
ID = "id"              # int or text, the entity's key (never money, never a float)
TEXT = "text"          # str
INTEGER = "integer"    # int
MONEY = "money"        # Decimal, in currency units (19.99), never float
DATETIME = "datetime"  # naive UTC datetime (timestamptz and ISO text with an offset are converted)
BOOL = "bool"          # True / False (0/1 integers accepted)
FLAG = "flag"          # 0 / 1 computed in SQL (the quality gate tests it)
TYPES = (ID, TEXT, INTEGER, MONEY, DATETIME, BOOL, FLAG)

# The order statuses storesync knows, exactly as written (lowercase). An order model's `status` must
# be one of them: the quality gate quarantines any other (`status_known`), so a model over a store
# with its own words (NEW, SHIPPED, CANCELED) maps them in SQL (a CASE).
ORDER_STATUSES: tuple[str, ...] = (
    "cancelled", "completed", "failed", "fulfilled", "pending", "processing", "refunded",
)

# The binds a model may take. A window model compares its time column with the window; an id model
# filters on a chunk of ids (expanded to an IN list).
WINDOW_BINDS = ("window_start", "window_end", "window_start_iso", "window_end_iso")


class ModelContractError(ConfigurationError):
    """A model's output breaks the contract (a required column missing, a value of the wrong type)."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = True
    personal: bool = False  # masked in samples (``storesync models check``)
    doc: str = ""
    values: tuple[str, ...] = ()  # the only values allowed (empty: any); `models check` reports others

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"column {self.name}: unknown type {self.type!r}; known: {', '.join(TYPES)}")


def req(name: str, type_: str, doc: str = "", *, personal: bool = False,
        values: tuple[str, ...] = ()) -> Column:
    return Column(name, type_, True, personal, doc, values)


def opt(name: str, type_: str, doc: str = "", *, personal: bool = False) -> Column:
    return Column(name, type_, False, personal, doc)


@dataclass(frozen=True)
class ModelContract:
    name: str
    one_row_per: str
    used_by: str
    columns: tuple[Column, ...]
    id_param: str | None = None     # the chunk bind (``order_ids``); None: a window model
    optional: bool = False          # the file may be absent (the store has no such data)
    time_column: str | None = None  # the column the window filters on (models check's 0-row probe)
    extra_binds: tuple[str, ...] = ()  # other binds the runner passes (order_history: window_end)
    group: str = "sync"             # "sync" (Warehouse checks these files) or another reader's
    owner: str = field(default="storesync.pipeline", compare=False)

    @property
    def filename(self) -> str:
        return f"{self.name}.sql"

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    @property
    def optional_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if not c.required)

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    def types(self) -> dict[str, str]:
        return {c.name: c.type for c in self.columns}


CONTRACTS: dict[str, ModelContract] = {}


def register(contract: ModelContract) -> ModelContract:
    """Add a model to the contract (or replace one of the same name, as a reload does)."""
    CONTRACTS[contract.name] = contract
    return contract


def contract_for(model: str) -> ModelContract:
    try:
        return CONTRACTS[model]
    except KeyError:
        raise ConfigurationError(f"no contract for model {model!r}; known: {', '.join(CONTRACTS)}") from None


def models_in(group: str = "sync") -> tuple[str, ...]:
    return tuple(name for name, c in CONTRACTS.items() if c.group == group)


# ---------------------------------------------------------------------------- the models
_STATUS_CHANGE = (
    req("change_id", ID, "stable id of the status change: part of each order event's identity"),
    req("order_id", ID),
    req("status", TEXT, "a later change to `fulfilled` or `completed` is sent as fulfilled, `cancelled` and "
        "`refunded` as such; any other status (e.g. `partially_refunded`) sends nothing"),
    req("changed_at", DATETIME),
    req("seq", INTEGER, "the change's place in the order's whole history; seq 1 is the placement"),
)

register(ModelContract(
    "order_changes", "status change in the window, `seq` = its place in the order's history",
    "order events (placed = seq 1)", _STATUS_CHANGE, time_column="changed_at"))

register(ModelContract(
    "order_history", "status change (before `:window_end`) of an order in a chunk",
    "quarantined orders re-checked later", _STATUS_CHANGE, id_param="order_ids",
    extra_binds=("window_end",)))

register(ModelContract(
    "orders", "order in a chunk, with its lines' subtotal and the customer's fields",
    "quality gate, order events", (
        req("order_id", ID),
        opt("customer_id", ID),
        req("email", TEXT, personal=True),
        req("status", TEXT, "the order's current status; any other value is quarantined (`status_known`)",
            values=ORDER_STATUSES),
        req("currency", TEXT, "ISO 4217 code"),
        req("subtotal", MONEY),
        req("total_tax", MONEY),
        req("total_discounts", MONEY),
        opt("discount_code", TEXT),
        req("total", MONEY),
        opt("payment_method", TEXT),
        opt("sailthru_bid", TEXT),
        req("created_at", DATETIME),
        req("updated_at", DATETIME),
        req("lines_subtotal", MONEY, "sum of the order's line totals (0 without lines)"),
        opt("line_count", INTEGER),
        opt("first_name", TEXT, personal=True),
        opt("last_name", TEXT, personal=True),
        opt("phone", TEXT, personal=True),
        opt("accepts_marketing", BOOL),
        opt("address_1", TEXT, personal=True),
        opt("city", TEXT),
        opt("state_code", TEXT),
        opt("country_code", TEXT),
        opt("postal_code", TEXT, personal=True),
    ), id_param="order_ids"))

_ORDER_LINE = (
    req("line_id", ID),
    req("order_id", ID),
    req("product_id", ID),
    opt("variant_id", ID),
    opt("sku", TEXT),
    opt("product_name", TEXT),
    req("quantity", INTEGER),
    req("unit_price", MONEY),
    req("line_total", MONEY),
    opt("product_url", TEXT),
    opt("image_url", TEXT),
    opt("category", TEXT),
    req("order_exists", FLAG, "1 when the line's order exists"),
    req("product_exists", FLAG, "1 when the line's product exists"),
)

register(ModelContract(
    "order_lines", "line of an order in a chunk, with product URL/image and `order_exists`/`product_exists`",
    "quality gate, line items", _ORDER_LINE, id_param="order_ids"))

register(ModelContract(
    "orphan_order_lines", "line recorded in the window whose order does not exist (`order_exists` = 0)",
    "quality gate: orphan lines quarantined", _ORDER_LINE, optional=True))

register(ModelContract(
    "customers", "customer created or changed in the window", "customer added, profiles", (
        req("customer_id", ID),
        req("email", TEXT, personal=True),
        opt("first_name", TEXT, personal=True),
        opt("last_name", TEXT, personal=True),
        opt("phone", TEXT, personal=True),
        opt("company", TEXT),
        opt("address_1", TEXT, personal=True),
        opt("city", TEXT),
        opt("state", TEXT),
        opt("state_code", TEXT),
        opt("country", TEXT),
        opt("country_code", TEXT),
        opt("postal_code", TEXT, personal=True),
        opt("accepts_marketing", BOOL, "missing: no consent"),
        req("created_at", DATETIME),
        req("updated_at", DATETIME),
    ), time_column="updated_at"))

register(ModelContract(
    "products", "product created or changed in the window (nightly: the whole catalog)",
    "product sync, content", (
        req("product_id", ID),
        req("sku", TEXT),
        req("title", TEXT),
        opt("description", TEXT),
        opt("brand", TEXT),
        opt("category", TEXT),
        req("url", TEXT, "absolute http(s) URL of the product page"),
        req("image_url", TEXT, "absolute http(s) URL"),
        req("price", MONEY),
        opt("compare_at_price", MONEY),
        opt("inventory", INTEGER),
        req("created_at", DATETIME),
        req("updated_at", DATETIME),
    ), time_column="updated_at"))

register(ModelContract(
    "product_variants", "variant of a product in a chunk (a store without variants may drop the file)",
    "product sync", (
        req("variant_id", ID),
        req("product_id", ID),
        req("sku", TEXT),
        req("title", TEXT),
        req("price", MONEY),
    ), id_param="product_ids", optional=True))

register(ModelContract(
    "checkouts", "checkout started or changed in the window, with `lines_subtotal`",
    "abandoned checkouts", (
        req("checkout_id", ID),
        opt("customer_id", ID),
        opt("email", TEXT, personal=True),
        req("status", TEXT, "open | completed | expired"),
        opt("checkout_url", TEXT),
        req("currency", TEXT),
        req("subtotal", MONEY),
        req("total_tax", MONEY),
        req("total", MONEY),
        opt("order_id", ID, "set once the checkout became an order"),
        opt("sailthru_bid", TEXT),
        req("created_at", DATETIME),
        req("updated_at", DATETIME),
        req("lines_subtotal", MONEY),
    ), time_column="updated_at"))

register(ModelContract(
    "checkout_lines", "line of a checkout in a chunk", "abandoned checkouts", (
        req("checkout_line_id", ID),
        req("checkout_id", ID),
        req("product_id", ID),
        opt("sku", TEXT),
        opt("product_name", TEXT),
        req("quantity", INTEGER),
        req("unit_price", MONEY),
        req("line_total", MONEY),
        opt("product_url", TEXT),
        opt("image_url", TEXT),
    ), id_param="checkout_ids"))

register(ModelContract(
    "site_events", "storefront event in the window (Segment `tracks` / Snowplow `events` rows)",
    "Sendlane added_to_cart and product_viewed", (
        req("event_id", ID, "the tracker's message id: the delivery's identity"),
        req("event_name", TEXT, "`added_to_cart` or `product_viewed` (others are skipped)"),
        req("occurred_at", DATETIME),
        opt("anonymous_id", TEXT, personal=True),
        opt("user_id", ID),
        opt("email", TEXT, "events without one cannot reach Sendlane and are counted", personal=True),
        opt("product_id", ID),
        opt("variant_id", ID),
        opt("sku", TEXT),
        opt("product_name", TEXT),
        opt("quantity", INTEGER),
        opt("price", MONEY),
        opt("currency", TEXT),
        opt("product_url", TEXT),
        opt("image_url", TEXT),
        opt("cart_id", ID, "added_to_cart: the cart (checkout) id"),
        opt("checkout_url", TEXT),
        opt("cart_total", MONEY, "added_to_cart: the cart's total after the add (else the line's)"),
    ), optional=True, time_column="occurred_at"))

# ---------------------------------------------------------------------------- LTV's models
# (registered here by storesync.ltv's owners, with ``group="ltv"``: the Warehouse of the syncs does
# not require them; ``storesync models check`` runs them too.)
# Plain SELECTs without binds; names configurable in [ltv] (docs/ltv.md). storesync.ltv.source
# reads its columns from these contracts.
register(ModelContract(
    "ltv_orders", "order (every one: LTV reads the whole history)", "LTV (`[ltv] orders_model`)", (
        req("order_id", ID),
        req("customer_id", ID, "orders without one are not counted"),
        req("status", TEXT, "the order's CURRENT status; its class comes from `[ltv]`"),
        req("currency", TEXT, "converted into `[ltv] currency` through `fx_rates`"),
        req("total", MONEY),
        req("created_at", DATETIME),
        opt("updated_at", DATETIME, "must move with every change of the order or its status: the daily "
            "job finds what changed through it (without it every day is computed in full)"),
    ), group="ltv", owner="storesync.ltv"))

register(ModelContract(
    "ltv_order_status_changes", "order status change", "LTV (`[ltv] status_history_model`: as-of statuses)", (
        req("order_id", ID),
        req("status", TEXT),
        req("changed_at", DATETIME),
        opt("history_id", ID, "breaks ties between changes at the same instant (the larger is later)"),
    ), optional=True, group="ltv", owner="storesync.ltv"))

register(ModelContract(
    "fx_rates", "currency and day a rate starts", "LTV (`[ltv] fx_rates_model`: into the reporting currency)", (
        req("currency", TEXT),
        req("day", DATETIME, "a date (or its ISO text): the rate holds from it to the next one"),
        req("rate", MONEY, "units of the reporting currency one unit of `currency` buys"),
    ), optional=True, group="ltv", owner="storesync.ltv"))


# ---------------------------------------------------------------------------- privacy's model
# People to erase (storesync.privacy; `storesync erase --from-model`, the maintenance DAG). A plain
# SELECT without binds, every open request each time: one already erased is not erased again.
register(ModelContract(
    "erasure_requests", "person to erase (an email, a customer id, or both)",
    "erasure (`storesync erase --from-model`, the maintenance DAG)", (
        opt("email", TEXT, "erased at the vendors and in storesync's tables", personal=True),
        opt("customer_id", ID, "its emails are looked up in `customers`"),
        opt("requested_at", DATETIME, "when the person asked (kept in the audit table)"),
    ), optional=True, group="privacy", owner="storesync.privacy"))


# ---------------------------------------------------------------------------- rendering
_TYPE_NAMES = {ID: "id", TEXT: "text", INTEGER: "int", MONEY: "money", DATETIME: "datetime", BOOL: "bool",
               FLAG: "0/1"}


def render_markdown(group: str | None = None) -> str:
    """The contract as the Markdown that ``include/sql/README.md`` holds between its markers."""
    out = ["| model | one row per | binds | used by |", "|---|---|---|---|"]
    contracts = [c for c in CONTRACTS.values() if group is None or c.group == group]
    for c in contracts:
        binds = f"`:{c.id_param}`" if c.id_param else ("none" if c.group in ("ltv", "privacy") else "window")
        binds += "".join(f", `:{b}`" for b in c.extra_binds)
        name = f"`{c.filename}`" + (" (optional)" if c.optional else "")
        out.append(f"| {name} | {c.one_row_per} | {binds} | {c.used_by} |")
    out.append("")
    out.append("Output columns (**bold**: required; the others may be left out and read as null):")
    out.append("")
    out.append("| model | columns (type) |")
    out.append("|---|---|")
    for c in contracts:
        cells = [(f"**{col.name}**" if col.required else col.name) + f" ({_TYPE_NAMES[col.type]})"
                 for col in c.columns]
        out.append(f"| `{c.name}` | {', '.join(cells)} |")
    statuses = [(c, col) for c in contracts for col in c.columns
                if col.values or (col.name == "status" and col.doc)]
    if statuses:
        out.append("")
        out.append("Status values (where a list is given, exactly those, as written: any other breaks the "
                   "contract; `storesync models check` reports them):")
        out.append("")
        for c, col in statuses:
            allowed = ", ".join(f"`{v}`" for v in col.values)
            out.append(f"- `{c.name}.{col.name}`: " + "; ".join(part for part in (allowed, col.doc) if part))
    return "\n".join(out) + "\n"


README_BEGIN = "<!-- contract:begin (generated from storesync/warehouse/contract.py) -->"
README_END = "<!-- contract:end -->"


def readme_section(readme_text: str) -> str:
    """The generated part of ``include/sql/README.md``."""
    start = readme_text.index(README_BEGIN) + len(README_BEGIN)
    return readme_text[start:readme_text.index(README_END)].strip("\n") + "\n"


def write_readme(path) -> None:
    """Regenerate the contract tables in the README at ``path`` (``python -m
    storesync.warehouse.contract``)."""
    from pathlib import Path

    path = Path(path)
    text = path.read_text()
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    path.write_text(f"{head}{README_BEGIN}\n{render_markdown()}{README_END}{tail}")


if __name__ == "__main__":
    from storesync.core.config import DEFAULT_MODELS_DIR

    write_readme(f"{DEFAULT_MODELS_DIR}/README.md")
