"""`opsconsole seed`: a consistent demo dataset for every source table, generated column-wise with
polars and loaded with COPY.

The data is a pure function of (seed, customers, as_of): every value is drawn from a counter-based
random stream (opsconsole.datagen.rng), so any chunk of any table can be generated independently,
in any order, on any thread, and the database ends up byte-identical for the same inputs.

Proportions per customer (averages; documented in the README):
- 6 orders over the 24 months before as_of, in 7 currencies following the customer's country, with
  statuses by age (recent: pending/processing/shipped; older: delivered/returned/cancelled);
- ~8.3 financial transactions, all referencing the order they belong to
  (reference_data->>'order_id' is the ERP order_id as text): a payment per paid order, refunds
  (negative) for returns and paid cancellations, processor fees (negative), adjustments (+/-),
  transfers and rare chargebacks (negative); 12% of customers pay from two accounts;
- 4 web sessions of 1-9 events (20 events), 85% of sessions logged in, over the last 18 months;
- ~1.9 lakehouse versions (gap-free, chained effective_from/effective_to, the last one open);
- market data: max(2,000, customers / 2) ticks over 16 symbols in the last 30 days;
- staging: max(100, customers / 50) pending rows from the simulator's generator (2% invalid).
About 2% of customers are the same person as an earlier customer arriving from another system
(ecommerce or erp): same name, the same e-mail in another case or with surrounding whitespace; about
8% of customers never order (prospects).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import polars as pl
import psycopg
from psycopg import sql

from opsconsole.datagen import simulate, synth
from opsconsole.datagen.rng import Rng, pick_weighted
from opsconsole.errors import OpsError
from opsconsole.pipeline import arrival
from opsconsole.pipeline.copyio import STAGING_COLUMNS, copy_frames

US = 1_000_000
DAY_US = 86_400 * US

ORDERS_PER_CUSTOMER = 6
SESSIONS_PER_CUSTOMER = 4
DUPLICATE_SHARE = 0.02  # customers who are an earlier customer again, from another system
PROSPECT_SHARE = 0.08  # customers who never order
CUSTOMER_HISTORY_DAYS = 1096  # customers were created over the 3 years before as_of
ORDER_HISTORY_DAYS = 730  # orders span the 24 months before as_of
EVENT_HISTORY_DAYS = 548  # web sessions span the last 18 months
MARKET_HISTORY_DAYS = 30
CHUNK = 100_000  # rows (sessions for events) generated per chunk

# Tables the seed fills (a migrated database has them all: `opsconsole db migrate` first).
SOURCE_TABLES = [
    "crm_customers",
    "erp_orders",
    "erp_order_keys",
    "ecommerce_events",
    "ecommerce_anonymous_events",
    "financial_transactions",
    "external_market_data",
    "financial_transactions_staging",
    "financial_staging_rejects",
    "lakehouse_customers",
]
# Derived tables of other areas that would describe the old data after a --truncate.
DERIVED_TABLES = [
    "financial_transactions_processed",
    "financial_transaction_ledger",
    "financial_fraud_minutes",
    "financial_processing_rollup",
    "financial_latency_rollup",
    "financial_staging_counts",
    "lakehouse_customer_chains",
    "customer_360_store",
    "customer_360_dirty",
    "customer_360_dirty_orders",
]
HISTORY_BATCH_SIZE = 50_000  # staging rows per process_financial_batch() call when seeding history
# Tables expected to receive more rows than this are loaded with their plain indexes dropped and
# rebuilt afterwards (~1.5x faster there). Below it the indexes stay: a rebuild is DDL, which the
# schema evolution log (50_lakehouse.sql) rightly records, and a demo-sized seed should not fill it
# with noise.
REBUILD_INDEXES_ABOVE = 1_000_000

CUSTOMER_COLUMNS = [
    "customer_id",
    "customer_uuid",
    "first_name",
    "last_name",
    "email",
    "phone",
    "address",
    "created_at",
    "updated_at",
    "source_system",
]
ORDER_COLUMNS = [
    "order_id",
    "customer_id",
    "order_number",
    "order_date",
    "total_amount",
    "currency_code",
    "status",
    "sales_rep_id",
    "created_at",
    "partition_date",
]
EVENT_COLUMNS = [
    "event_id",
    "session_id",
    "customer_id",
    "event_timestamp",
    "event_type",
    "event_data",
    "page_url",
    "user_agent",
    "ip_address",
    "processed_at",
]
TRANSACTION_COLUMNS = [
    "transaction_id",
    "account_id",
    "transaction_timestamp",
    "amount",
    "transaction_type",
    "reference_data",
    "batch_id",
    "is_processed",
]
MARKET_COLUMNS = ["tick_id", "symbol", "timestamp", "price", "volume", "metadata", "ingestion_timestamp"]
LAKEHOUSE_COLUMNS = [
    "customer_id",
    "customer_data",
    "effective_from",
    "effective_to",
    "version_number",
    "operation_type",
    "transaction_id",
    "created_at",
    "source_updated_at",
]

# The platform's flows, as data_lineage rows: (source_table, source_column, target_table,
# target_column, transformation_logic, pipeline_name).
LINEAGE = [
    ("financial_transactions_staging", None, "financial_transactions_processed", None,
     "validate, fraud-score and move claimed staging rows (set-based, exactly once per transaction_id)",
     "financial_pipeline"),
    ("financial_transactions_staging", "amount", "financial_transactions_processed", "amount",
     "copied after bounds validation", "financial_pipeline"),
    ("financial_transactions_staging", "transaction_id", "financial_transactions_processed", "transaction_id",
     "deduplicated through the processed-transaction ledger", "financial_pipeline"),
    ("financial_transactions_processed", "is_processed", "financial_transactions", "is_processed",
     "set true when the transaction is processed", "financial_pipeline"),
    ("crm_customers", None, "customer_360_mv", None, "one row per customer (profile)", "customer_360"),
    ("crm_customers", "email", "customer_360_mv", "email", "copied", "customer_360"),
    ("erp_orders", "total_amount", "customer_360_mv", "total_lifetime_value",
     "sum over non-cancelled orders", "customer_360"),
    ("erp_orders", "order_date", "customer_360_mv", "last_order_date", "max over non-cancelled orders",
     "customer_360"),
    ("ecommerce_events", "event_type", "customer_360_mv", "online_purchases",
     "count of purchase events in the last year", "customer_360"),
    ("ecommerce_events", "event_data", "customer_360_mv", "favorite_category",
     "mode of event_data->>'category'", "customer_360"),
    ("ecommerce_events", "user_agent", "customer_360_mv", "preferred_device",
     "mode of the device class parsed from the user agent", "customer_360"),
    ("financial_transactions", "amount", "customer_360_mv", "total_transaction_amount",
     "sum of processed transactions joined on reference_data->>'order_id' = erp_orders.order_id",
     "customer_360"),
    ("crm_customers", None, "lakehouse_customers", None,
     "every insert/update/delete becomes a new version (SCD type 2)", "lakehouse"),
    ("crm_customers", "address", "lakehouse_customers", "customer_data",
     "the whole profile as jsonb per version", "lakehouse"),
    ("external_market_data", "price", "data_quality_metrics", "metric_value", "range and freshness rules",
     "data_quality"),
    ("financial_transactions", None, "data_quality_metrics", None, "rule checks per run", "data_quality"),
]  # fmt: skip


@dataclass(frozen=True)
class SeedPlan:
    customers: int
    seed: int = 1
    as_of: datetime = field(default_factory=lambda: default_as_of())
    backlog: int | None = None  # pending staging rows; None: max(100, customers / 50)

    @property
    def as_of_us(self) -> int:
        return int(self.as_of.timestamp()) * US

    @property
    def orders(self) -> int:
        return self.customers * ORDERS_PER_CUSTOMER

    @property
    def sessions(self) -> int:
        return self.customers * SESSIONS_PER_CUSTOMER

    @property
    def market_ticks(self) -> int:
        return max(2000, self.customers // 2)

    @property
    def staging_rows(self) -> int:
        return max(100, self.customers // 50) if self.backlog is None else self.backlog


def default_as_of(today: date | None = None) -> datetime:
    """Midnight UTC of today: two runs on the same day with the same seed load identical data."""
    d = today or datetime.now(UTC).date()
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def _ts(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.Datetime("us", "UTC"))


class Generator:
    """Pure generation of every seeded table, chunk by chunk."""

    def __init__(self, plan: SeedPlan):
        if plan.customers < 10:
            raise OpsError("seed needs at least 10 customers.")
        self.plan = plan
        self.rng = Rng(plan.seed)
        n = plan.customers
        self.cust_start_us = plan.as_of_us - CUSTOMER_HISTORY_DAYS * DAY_US
        self.cust_span_us = (CUSTOMER_HISTORY_DAYS - 1) * DAY_US  # the newest customer is a day old
        ids = pl.DataFrame({"k": pl.int_range(1, n + 1, dtype=pl.Int64, eager=True)})
        k = pl.col("k")
        w = ids.select(
            order_w=pl.when(self.rng.uniform("cust.prospect", k) < PROSPECT_SHARE)
            .then(0.0)
            .otherwise(self.rng.lognormal("cust.activity", k, 1.0, 0.8)),
        ).with_columns(visit_w=pl.col("order_w") + 0.5)
        # Inclusive running sums: the inverse CDFs used to pick who places an order / visits.
        self.order_cum = w["order_w"].cum_sum()
        self.visit_cum = w["visit_w"].cum_sum()

    # ---------------------------------------------------------------- customers
    def _created_us(self, k: pl.Expr) -> pl.Expr:
        """Customers are created in id order across the history window (jittered within their slot)."""
        n = self.plan.customers
        slot = self.cust_span_us / n
        return pl.lit(self.cust_start_us, dtype=pl.Int64) + (
            ((k - 1).cast(pl.Float64) + self.rng.uniform("cust.created", k)) * slot
        ).cast(pl.Int64)

    def _existing_before(self, ts_us: pl.Expr) -> pl.Expr:
        """How many of the first customers certainly existed at ts (customer k+1 has created <= ts
        for every index k below this count)."""
        n = self.plan.customers
        return (
            ((ts_us - self.cust_start_us).cast(pl.Float64) * n / self.cust_span_us)
            .floor()
            .cast(pl.Int64)
            .clip(1, n)
        )

    def _versions(self, k: pl.Expr) -> pl.Expr:
        r = self.rng
        return (
            1
            + (r.uniform("cust.v2", k) < 0.55).cast(pl.Int64)
            + (r.uniform("cust.v3", k) < 0.25).cast(pl.Int64)
            + (r.uniform("cust.v4", k) < 0.08).cast(pl.Int64)
        )

    def _identity(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Adds _pid (the person a customer row is) and _dup: ~2% of customers re-use an earlier,
        non-duplicate customer's identity (the first of three candidates that is not a duplicate)."""
        r = self.rng
        k = pl.col("customer_id")
        window = pl.min_horizontal(k - 1, pl.lit(5000, dtype=pl.Int64))
        frame = frame.with_columns(
            _dup_raw=(r.uniform("cust.dup", k) < DUPLICATE_SHARE) & (k > 1),
            **{f"_c{i}": k - 1 - r.below(f"cust.dupsrc.{i}", k, window) for i in range(3)},
        )
        frame = frame.with_columns(
            **{f"_c{i}_ok": r.uniform("cust.dup", pl.col(f"_c{i}")) >= DUPLICATE_SHARE for i in range(3)}
        )
        src = pl.when(pl.lit(False)).then(pl.lit(None, dtype=pl.Int64))
        for i in range(3):
            src = src.when(pl.col(f"_c{i}_ok")).then(pl.col(f"_c{i}"))
        src = src.otherwise(pl.lit(None, dtype=pl.Int64))
        frame = frame.with_columns(_src=pl.when(pl.col("_dup_raw")).then(src))
        return frame.with_columns(
            _dup=pl.col("_src").is_not_null(),
            _pid=pl.coalesce(pl.col("_src"), k),
        ).drop("_dup_raw", "_c0", "_c1", "_c2", "_c0_ok", "_c1_ok", "_c2_ok", "_src")

    def _customer_base(self, lo: int, hi: int) -> pl.DataFrame:
        """Customers lo+1..hi with person, timeline and version count (internal columns kept)."""
        r = self.rng
        frame = pl.DataFrame({"customer_id": pl.int_range(lo + 1, hi + 1, dtype=pl.Int64, eager=True)})
        frame = self._identity(frame)
        k = pl.col("customer_id")
        person = synth.person_columns(r, pl.col("_pid"))
        frame = frame.with_columns(
            _created_us=self._created_us(k),
            _nver=self._versions(k),
            _upd_frac=0.2 + 0.8 * r.uniform("cust.updated", k),
            _sys=r.choice("cust.dupsys", k, ["ecommerce", "erp"]),
            **{name: expr for name, expr in person.items()},
        )
        frame = frame.with_columns(
            _updated_us=pl.when(pl.col("_nver") == 1)
            .then(pl.col("_created_us"))
            .otherwise(
                pl.col("_created_us")
                + ((self.plan.as_of_us - pl.col("_created_us")).cast(pl.Float64) * pl.col("_upd_frac")).cast(
                    pl.Int64
                )
            ),
            # The current address is the last version's (key customer_id * 8 + nver).
            _addr_key=k * 8 + pl.col("_nver"),
        )
        return frame

    def customers(self, lo: int, hi: int) -> pl.DataFrame:
        r = self.rng
        frame = self._customer_base(lo, hi)
        k = pl.col("customer_id")
        frame = frame.with_columns(
            _city_cur=pl.col("country_idx") * 6 + r.randint("addr.city", pl.col("_addr_key"), 0, 6),
            _variant=synth.email_variant(r, k, pl.col("email")),
        )
        return frame.select(
            "customer_id",
            r.uuid("customer.uuid", k).alias("customer_uuid"),
            "first_name",
            "last_name",
            pl.when(pl.col("_dup")).then(pl.col("_variant")).otherwise(pl.col("email")).alias("email"),
            "phone",
            synth.address_struct(r, pl.col("_addr_key"), pl.col("country_idx"), pl.col("_city_cur")).alias(
                "address"
            ),
            _ts(pl.col("_created_us")).alias("created_at"),
            _ts(pl.col("_updated_us")).alias("updated_at"),
            pl.when(pl.col("_dup")).then(pl.col("_sys")).otherwise(pl.lit("crm")).alias("source_system"),
        )

    def lakehouse(self, lo: int, hi: int) -> pl.DataFrame:
        """Versions 1..nver of customers lo+1..hi: INSERT then UPDATEs, the last equal to the CRM row;
        effective_to of a version is effective_from of the next, the last one open."""
        r = self.rng
        base = self._customer_base(lo, hi)
        frame = base.with_columns(version_number=pl.int_ranges(1, pl.col("_nver") + 1)).explode(
            "version_number"
        )
        v = pl.col("version_number").cast(pl.Int64)
        nver = pl.col("_nver")
        key = pl.col("customer_id") * 8 + v
        span = (pl.col("_updated_us") - pl.col("_created_us")).cast(pl.Float64)
        frac = (
            pl.when(v == 1)
            .then(0.0)
            .when(v == nver)
            .then(1.0)
            .otherwise(((v - 1).cast(pl.Float64) - 0.4 * r.uniform("lake.jitter", key)) / (nver - 1))
        )
        frame = frame.with_columns(
            _key=key,
            _from_us=pl.col("_created_us") + (span * frac).cast(pl.Int64),
            _phone_pid=pl.when(v == nver).then(pl.col("_pid")).otherwise(-key),
        )
        frame = frame.with_columns(
            _city=pl.col("country_idx") * 6 + r.randint("addr.city", pl.col("_key"), 0, 6),
            _phone=synth.person_columns(r, pl.col("_phone_pid"))["phone"],
            _email=pl.when(pl.col("_dup"))
            .then(synth.email_variant(r, pl.col("customer_id"), pl.col("email")))
            .otherwise(pl.col("email")),
        )
        frame = frame.with_columns(
            _to_us=pl.col("_from_us").shift(-1).over("customer_id"),
        )
        json_ts = "%Y-%m-%dT%H:%M:%S%.6f+00:00"
        return frame.select(
            "customer_id",
            # The CRM row as it was in that version, in to_jsonb(crm_customers row) shape.
            pl.struct(
                customer_id=pl.col("customer_id"),
                customer_uuid=r.uuid("customer.uuid", pl.col("customer_id")),
                first_name=pl.col("first_name"),
                last_name=pl.col("last_name"),
                email=pl.col("_email"),
                phone=pl.col("_phone"),
                address=synth.address_struct(r, pl.col("_key"), pl.col("country_idx"), pl.col("_city")),
                created_at=_ts(pl.col("_created_us")).dt.to_string(json_ts),
                updated_at=_ts(pl.col("_from_us")).dt.to_string(json_ts),
                source_system=pl.when(pl.col("_dup")).then(pl.col("_sys")).otherwise(pl.lit("crm")),
            ).alias("customer_data"),
            _ts(pl.col("_from_us")).alias("effective_from"),
            _ts(pl.col("_to_us")).alias("effective_to"),
            pl.col("version_number").cast(pl.Int32),
            pl.when(v == 1).then(pl.lit("INSERT")).otherwise(pl.lit("UPDATE")).alias("operation_type"),
            (pl.col("customer_id") * 8 + v + 1_000_000_000).alias("transaction_id"),
            _ts(pl.col("_from_us")).alias("created_at"),
            _ts(pl.col("_from_us")).alias("source_updated_at"),  # event time: the CRM row's updated_at
        )

    # ---------------------------------------------------------------- orders and money
    def _orders_frame(self, lo: int, hi: int) -> pl.DataFrame:
        """Orders lo+1..hi with internal columns the transactions derive from."""
        r = self.rng
        plan = self.plan
        m = plan.orders
        start = plan.as_of_us - ORDER_HISTORY_DAYS * DAY_US
        slot = ORDER_HISTORY_DAYS * DAY_US / m
        frame = pl.DataFrame({"order_id": pl.int_range(lo + 1, hi + 1, dtype=pl.Int64, eager=True)})
        o = pl.col("order_id")
        frame = frame.with_columns(
            # Order ids grow with time, as an ERP's do.
            _ts_us=pl.lit(start, dtype=pl.Int64)
            + (((o - 1).cast(pl.Float64) + r.uniform("order.ts", o)) * slot).cast(pl.Int64),
            _u_cust=r.uniform("order.customer", o),
            _usd=r.lognormal("order.amount", o, 85.0, 0.9),
            _other_cur=r.uniform("order.othercur", o) < 0.1,
            _cur_pick=r.choice("order.currency", o, synth.CURRENCIES, [50, 20, 12, 8, 5, 3, 2]),
            _st_new=r.choice(
                "order.st_new", o, ["pending", "processing", "shipped", "cancelled"], [45, 35, 10, 10]
            ),
            _st_mid=r.choice(
                "order.st_mid",
                o,
                ["processing", "shipped", "delivered", "cancelled", "returned"],
                [10, 50, 30, 7, 3],
            ),
            _st_old=r.choice(
                "order.st_old", o, ["delivered", "cancelled", "returned", "shipped"], [78, 10, 8, 2]
            ),
            sales_rep_id=pl.when(r.uniform("order.web", o) < 0.3)
            .then(pl.lit(None, dtype=pl.Int32))
            .otherwise(r.randint("order.rep", o, 1, 251).cast(pl.Int32)),
        )
        frame = frame.with_columns(
            customer_id=pick_weighted(
                self.order_cum, pl.col("_u_cust"), self._existing_before(pl.col("_ts_us"))
            )
            + 1,
            order_date=_ts(pl.col("_ts_us")).dt.date(),
        )
        # The customer's country decides the usual currency (recomputed from the customer's identity).
        ids = self._identity(frame.select("customer_id"))
        frame = frame.with_columns(_pid=ids["_pid"])
        frame = frame.with_columns(
            _country=r.index("person.country", pl.col("_pid"), [c[3] for c in synth.COUNTRIES]),
        )
        home = synth.gather([c[2] for c in synth.COUNTRIES], pl.col("_country"))
        age_days = (plan.as_of_us - pl.col("_ts_us")) // DAY_US
        frame = frame.with_columns(
            currency_code=pl.when(pl.col("_other_cur")).then(pl.col("_cur_pick")).otherwise(home),
            status=pl.when(age_days < 3)
            .then(pl.col("_st_new"))
            .when(age_days < 14)
            .then(pl.col("_st_mid"))
            .otherwise(pl.col("_st_old")),
        )
        return frame.with_columns(
            order_number=pl.lit("SO-") + o.cast(pl.String).str.zfill(9),
            total_amount=synth.amount_in(pl.col("currency_code"), pl.col("_usd")),
            created_at=_ts(pl.col("_ts_us")),
            partition_date=pl.col("order_date"),
        )

    def orders(self, lo: int, hi: int) -> pl.DataFrame:
        return self._orders_frame(lo, hi).select(ORDER_COLUMNS)

    def transactions(self, lo: int, hi: int) -> pl.DataFrame:
        """Financial transactions of orders lo+1..hi. transaction_id = order_id * 8 + kind slot."""
        r = self.rng
        plan = self.plan
        orders = self._orders_frame(lo, hi)
        o = pl.col("order_id")
        orders = orders.with_columns(
            _unpaid_cancel=(pl.col("status") == "cancelled") & (r.uniform("txn.unpaid", o) < 0.5),
            _pay_delay=r.randint("txn.paydelay", o, 30, 900) * US,
            _ref_channel=r.choice("txn.channel", o, ["web", "store", "phone", "app"], [5, 2, 1, 2]),
            _u_refund=r.uniform("txn.partial", o),
            _refund_frac=0.1 + 0.4 * r.uniform("txn.partialfrac", o),
            _refund_days=r.randint("txn.refunddays", o, 3, 26) * DAY_US,
            _cancel_hours=r.randint("txn.cancelhours", o, 1, 37) * 3600 * US,
            _u_fee=r.uniform("txn.fee", o),
            _u_adj=r.uniform("txn.adj", o),
            _adj=((r.uniform("txn.adjamt", o) - 0.5) * 40).round(2),
            _u_cb=r.uniform("txn.cb", o),
            _cb_days=r.randint("txn.cbdays", o, 20, 61) * DAY_US,
            _u_tr=r.uniform("txn.transfer", o),
            _tr_amt=r.lognormal("txn.tramt", o, 120.0, 0.8).round(2),
        )
        paid = (pl.col("status") != "pending") & ~pl.col("_unpaid_cancel")
        orders = orders.with_columns(
            _paid=paid,
            _pay_us=pl.col("_ts_us") + pl.col("_pay_delay"),
            _account=synth.account_for(r, pl.col("customer_id"), o),
        )
        total = pl.col("total_amount")
        kinds = [
            # slot, type, condition, amount, timestamp
            (0, "payment", pl.col("_paid"), total, pl.col("_pay_us")),
            (
                1,
                "refund",
                pl.col("_paid")
                & (
                    pl.col("status").is_in(["returned", "cancelled"])
                    | ((pl.col("status") == "delivered") & (pl.col("_u_refund") < 0.04))
                ),
                pl.when(pl.col("status") == "delivered")
                .then(-(total * pl.col("_refund_frac")))
                .otherwise(-total),
                pl.when(pl.col("status") == "cancelled")
                .then(pl.col("_pay_us") + pl.col("_cancel_hours"))
                .otherwise(pl.col("_pay_us") + pl.col("_refund_days")),
            ),
            (
                2,
                "fee",
                pl.col("_paid") & (pl.col("_u_fee") < 0.12),
                -(0.3 + total * 0.029),
                pl.col("_pay_us") + US,
            ),
            (
                3,
                "adjustment",
                pl.col("_paid") & (pl.col("_u_adj") < 0.06),
                pl.col("_adj"),
                pl.col("_pay_us") + 7 * DAY_US,
            ),
            (
                4,
                "chargeback",
                pl.col("_paid") & (pl.col("status") == "delivered") & (pl.col("_u_cb") < 0.006),
                -total,
                pl.col("_pay_us") + pl.col("_cb_days"),
            ),
            (
                5,
                "transfer",
                pl.col("_paid") & (pl.col("_u_tr") < 0.1),
                pl.col("_tr_amt"),
                pl.col("_pay_us") + 60 * US,
            ),
        ]
        parts = []
        for slot, ttype, cond, amount, ts in kinds:
            part = orders.filter(cond).select(
                (o * 8 + slot).alias("transaction_id"),
                pl.col("_account").alias("account_id"),
                ts.alias("_txn_us"),
                pl.when(pl.col("currency_code") == "JPY")
                .then(amount.round(0))
                .otherwise(amount.round(2))
                .alias("amount"),
                pl.lit(ttype).alias("transaction_type"),
                pl.struct(
                    order_id=o.cast(pl.String),
                    order_number=pl.col("order_number"),
                    currency=pl.col("currency_code"),
                    customer_id=pl.col("customer_id"),
                    channel=pl.col("_ref_channel"),
                ).alias("reference_data"),
            )
            parts.append(part)
        txn = pl.concat(parts).filter(pl.col("_txn_us") < plan.as_of_us).sort("transaction_id")
        settled = plan.as_of_us - DAY_US
        txn = txn.with_columns(
            _u_proc=r.uniform("txn.processed", pl.col("transaction_id")),
        )
        return txn.select(
            "transaction_id",
            "account_id",
            _ts(pl.col("_txn_us")).alias("transaction_timestamp"),
            "amount",
            "transaction_type",
            "reference_data",
            (pl.lit("erp-") + _ts(pl.col("_txn_us")).dt.strftime("%Y%m%d")).alias("batch_id"),
            ((pl.col("_txn_us") < settled) & (pl.col("_u_proc") >= 0.02)).alias("is_processed"),
        )

    # ---------------------------------------------------------------- web events
    def events(self, lo: int, hi: int) -> pl.DataFrame:
        """Events of sessions lo..hi-1. event_id = session * 10 + position + 1 (sessions hold <= 9)."""
        r = self.rng
        plan = self.plan
        s_total = plan.sessions
        start = plan.as_of_us - EVENT_HISTORY_DAYS * DAY_US
        slot = EVENT_HISTORY_DAYS * DAY_US / s_total
        sessions = pl.DataFrame({"_s": pl.int_range(lo, hi, dtype=pl.Int64, eager=True)})
        s = pl.col("_s")
        sessions = sessions.with_columns(
            _start_us=pl.lit(start, dtype=pl.Int64)
            + ((s.cast(pl.Float64) + r.uniform("sess.start", s)) * slot).cast(pl.Int64),
            _len=r.randint("sess.len", s, 1, 10),
            _logged=r.uniform("sess.logged", s) < 0.85,
            _u_cust=r.uniform("sess.customer", s),
            _same_device=r.uniform("sess.samedevice", s) < 0.8,
        )
        sessions = sessions.with_columns(
            customer_id=pl.when(pl.col("_logged")).then(
                pick_weighted(self.visit_cum, pl.col("_u_cust"), self._existing_before(pl.col("_start_us")))
                + 1
            ),
        )
        sessions = sessions.with_columns(
            _device_key=pl.when(pl.col("_same_device") & pl.col("customer_id").is_not_null())
            .then(pl.col("customer_id"))
            .otherwise(-s - 1),
            _cat=r.randint("ev.cat", pl.col("customer_id").fill_null(-s - 1), 0, len(synth.CATEGORIES)),
            session_id=r.uuid("session", s),
        )
        sessions = sessions.with_columns(
            user_agent=synth.device_columns(r, pl.col("_device_key"))["user_agent"],
            ip_address=synth.ip_address(r, s),
        )
        ev = sessions.with_columns(_k=pl.int_ranges(0, pl.col("_len"))).explode("_k")
        ev = ev.with_columns(_k=pl.col("_k").cast(pl.Int64))
        ev = ev.with_columns(event_id=pl.col("_s") * 10 + pl.col("_k") + 1)
        e = pl.col("event_id")
        ev = ev.with_columns(
            _gap_s=pl.when(pl.col("_k") == 0).then(0).otherwise(r.randint("ev.gap", e, 5, 241)),
            _micro=r.randint("ev.micro", e, 0, US),
            _type=r.choice("ev.type", e, synth.EVENT_TYPES, [35, 40, 17, 8]),
            _own_cat=r.uniform("ev.owncat", e) < 0.6,
            _rand_cat=r.randint("ev.randcat", e, 0, len(synth.CATEGORIES)),
            _pick=r.randint("ev.product", e, 0, synth.PRODUCTS // 10),
            _delay_us=r.randint("ev.delay", e, 200_000, 3 * US),
            _late=r.uniform("ev.late", e) < 0.02,
            _late_us=r.randint("ev.latedelay", e, 60 * US, 6 * 3600 * US),
        )
        ev = ev.with_columns(
            event_type=pl.when(pl.col("_k") == 0).then(pl.lit("page_view")).otherwise(pl.col("_type")),
            _ts_us=pl.col("_start_us") + pl.col("_gap_s").cum_sum().over("_s") * US + pl.col("_micro"),
            _product=(
                pl.col("_pick") * 10
                + pl.when(pl.col("_own_cat")).then(pl.col("_cat")).otherwise(pl.col("_rand_cat"))
            ).clip(1, synth.PRODUCTS),
        )
        ev = ev.filter(pl.col("_ts_us") < plan.as_of_us)
        ev = ev.with_columns(**synth.event_payload(r, e, pl.col("event_type"), pl.col("_product")))
        return ev.select(
            "event_id",
            "session_id",
            "customer_id",
            _ts(pl.col("_ts_us")).alias("event_timestamp"),
            "event_type",
            "event_data",
            "page_url",
            "user_agent",
            "ip_address",
            _ts(
                pl.col("_ts_us")
                + pl.when(pl.col("_late")).then(pl.col("_late_us")).otherwise(pl.col("_delay_us"))
            ).alias("processed_at"),
        )

    # ---------------------------------------------------------------- market data
    def market(self, lo: int, hi: int) -> pl.DataFrame:
        """Ticks lo+1..hi: a geometric random walk per symbol over the last 30 days."""
        r = self.rng
        plan = self.plan
        n_sym = len(synth.MARKET_SYMBOLS)
        per_symbol = plan.market_ticks // n_sym + 1
        start = plan.as_of_us - MARKET_HISTORY_DAYS * DAY_US
        step_us = MARKET_HISTORY_DAYS * DAY_US // per_symbol
        # The walk needs every earlier step of the symbol: build whole symbols, then slice.
        frame = pl.DataFrame({"tick_id": pl.int_range(1, plan.market_ticks + 1, dtype=pl.Int64, eager=True)})
        t = pl.col("tick_id")
        frame = frame.with_columns(
            _sym=((t - 1) % n_sym).cast(pl.Int64),
            _step=(t - 1) // n_sym,
            _z=r.normal("mkt.walk", t),
            _vol=r.lognormal("mkt.volume", t, 800.0, 1.1),
            _spread=r.uniform("mkt.spread", t) * 0.0008 + 0.0001,
            _ingest_us=r.randint("mkt.ingest", t, 50_000, 1_500_000),
        )
        sigma = 0.01 / (per_symbol**0.5) * 4  # ~4% daily-ish wander over the window
        p0 = synth.gather([s[1] for s in synth.MARKET_SYMBOLS], pl.col("_sym"))
        frame = frame.with_columns(_logp=(pl.col("_z") * sigma).cum_sum().over("_sym"))
        frame = frame.with_columns(
            _price=(p0 * pl.col("_logp").exp()).round(4),
            _ts_us=pl.lit(start, dtype=pl.Int64) + pl.col("_step") * step_us,
        )
        frame = frame.slice(lo, hi - lo)
        return frame.select(
            "tick_id",
            synth.gather([s[0] for s in synth.MARKET_SYMBOLS], pl.col("_sym")).alias("symbol"),
            _ts(pl.col("_ts_us")).alias("timestamp"),
            pl.col("_price").alias("price"),
            (pl.col("_vol").round(0).cast(pl.Int64) + 1).alias("volume"),
            pl.struct(
                exchange=synth.gather([s[2] for s in synth.MARKET_SYMBOLS], pl.col("_sym")),
                currency=synth.gather([s[3] for s in synth.MARKET_SYMBOLS], pl.col("_sym")),
                bid=(pl.col("_price") * (1 - pl.col("_spread"))).round(4),
                ask=(pl.col("_price") * (1 + pl.col("_spread"))).round(4),
                source=pl.lit("seed"),
            ).alias("metadata"),
            _ts(pl.col("_ts_us") + pl.col("_ingest_us")).alias("ingestion_timestamp"),
        )

    # ---------------------------------------------------------------- staging backlog
    def staging(self, lo: int, hi: int) -> pl.DataFrame:
        """Pending staging rows from the simulator's generator (same faults as a live feed would
        carry: 2% invalid, 1% duplicate, 0.5% conflict), arriving over the 10 minutes before as_of."""
        plan = self.plan
        n = plan.staging_rows
        cfg = simulate.SimConfig(
            seed=plan.seed,
            rate=n / 600.0,
            faults=simulate.FaultRates(
                invalid=0.02, duplicate=0.01, conflict=0.005, late=0.02, out_of_order=0.02
            ),
            start_us=plan.as_of_us - 600 * US,
            transaction_id_base=plan.orders * 8 + 8,
            customer_id_max=plan.customers,
            order_id_max=plan.orders,
            batch_prefix="seed",
        )
        rows = simulate.financial_rows(cfg, lo, hi)
        return rows.with_columns(batch_id=pl.lit("seed-") + (pl.col("_g") // 500).cast(pl.String)).select(
            STAGING_COLUMNS
        )


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------
@dataclass
class TableResult:
    table: str
    rows: int = 0
    seconds: float = 0.0
    status: str = "loaded"
    note: str = ""
    relation: str = ""  # the table behind a labelled result (for ANALYZE)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {
            "table": self.table,
            "rows": self.rows,
            "seconds": round(self.seconds, 2),
            "rows_per_s": round(self.rows_per_s),
            "status": self.status,
            "note": self.note,
        }


@dataclass
class Job:
    table: str
    columns: Sequence[str]
    total: int  # expected rows (progress bar)
    chunks: Callable[[], Iterator[pl.DataFrame]]
    before: Callable[[psycopg.Connection], None] | None = None
    after: Callable[[psycopg.Connection], None] | None = None
    phase: int = 1  # a phase starts when the previous one has committed
    skip_if_filled: str = ""  # when the table already holds rows at its turn: skip, saying this
    name: str = ""  # shown in progress and results (default: the table)

    @property
    def label(self) -> str:
        return self.name or self.table


def _ranges(total: int, chunk: int) -> Iterator[tuple[int, int]]:
    for lo in range(0, total, chunk):
        yield lo, min(total, lo + chunk)


class Progress:
    """Thread-safe progress sink: the CLI plugs a rich progress bar in; tests use the default."""

    def start(self, table: str, total: int) -> None:  # pragma: no cover - trivial
        pass

    def advance(self, table: str, rows: int) -> None:  # pragma: no cover - trivial
        pass

    def done(self, result: TableResult) -> None:  # pragma: no cover - trivial
        pass


def seeded_row_counts(conn: psycopg.Connection, *, exact: bool = True) -> dict[str, int]:
    """Row counts of the seedable tables that hold data (exists-checks, then count(*) when ``exact``;
    otherwise 1 per non-empty table, which is all --truncate needs to know)."""
    counts = {}
    present = conn.execute(  # a database of an earlier release lacks the newest tables
        "SELECT array_agg(n) FROM unnest(%s::text[]) AS n WHERE to_regclass(n) IS NOT NULL", (SOURCE_TABLES,)
    ).fetchone()[0]
    for table in present or []:
        has = conn.execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))
        ).fetchone()
        if has and has[0]:
            if not exact:
                counts[table] = 1
                continue
            (n,) = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
            counts[table] = int(n)
    return counts


def truncate(conn: psycopg.Connection) -> list[str]:
    """Empty the seeded tables (and the derived tables that would describe the old data)."""
    # Only tables (TRUNCATE refuses views), and only those this schema has: a database of the
    # previous release lacks the newest derived tables.
    rows = conn.execute(
        "SELECT n FROM unnest(%s::text[]) AS n "
        "WHERE (SELECT relkind FROM pg_class WHERE oid = to_regclass(n)) IN ('r', 'p')",
        (SOURCE_TABLES + DERIVED_TABLES,),
    ).fetchall()
    tables = [r[0] for r in rows]
    if tables:
        conn.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in tables)
            )
        )
    return tables


def _set_identity(conn: psycopg.Connection, table: str, column: str, also: Sequence[str] = ()) -> None:
    """After loading explicit ids, move the identity past them so later inserts do not collide.
    ``also``: tables whose ids come from the same sequence (the anonymous events)."""
    ids = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT max({c}) AS m FROM {t}").format(c=sql.Identifier(column), t=sql.Identifier(t))
        for t in (table, *also)
    )
    conn.execute(
        sql.SQL(
            "SELECT setval(pg_get_serial_sequence({t}, {c}), greatest(coalesce(max(m), 0), 1), "
            "max(m) IS NOT NULL) FROM ({ids}) x"
        ).format(t=sql.Literal(table), c=sql.Literal(column), ids=ids)
    )


def _has_table(conn: psycopg.Connection, name: str) -> bool:
    """Whether this schema has the table: a database of an earlier release, which the upgrade tests
    seed, lacks the newer ones (the anonymous events, 0029; the staging rejects, 0031)."""
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


def _loaders_count_arrivals(conn: psycopg.Connection) -> bool:
    """Staged rows are counted by the loader's call (opsconsole.pipeline.arrival) from 0030 on; a
    database of an earlier release, which the upgrade tests seed, counts them by its trigger."""
    return conn.execute(
        "SELECT to_regprocedure('financial_staging_arrived(jsonb, jsonb)') IS NOT NULL"
    ).fetchone()[0]


def _orders_after(conn: psycopg.Connection) -> None:
    """Every writer of orders claims their ids in erp_order_keys in its own transaction (no trigger
    does: docs/scaling.md). The seed's order ids are unique by construction and the tables start
    empty, so the whole load's keys are claimed in one set-based statement. (A database of a release
    before 0028, which the upgrade tests seed, still has the row trigger that claimed them already.)"""
    conn.execute(
        "INSERT INTO erp_order_keys (order_id, partition_date) "
        "SELECT order_id, partition_date FROM erp_orders ON CONFLICT (order_id) DO NOTHING"
    )


def _lake_capture_triggers(conn: psycopg.Connection) -> list[str]:
    """INSERT triggers on crm_customers that version new customers into the lakehouse (50_lakehouse.sql)."""
    rows = conn.execute(
        """
        SELECT t.tgname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
        WHERE t.tgrelid = 'crm_customers'::regclass AND NOT t.tgisinternal
          AND p.proname = 'lakehouse_capture_crm_changes' AND (t.tgtype & 4) <> 0
        """
    ).fetchall()
    return [r[0] for r in rows]


def _customers_before(triggers: list[str]) -> Callable[[psycopg.Connection], None]:
    """The seed writes each customer's history itself (versions back to created_at), so the capture
    that would start every chain at version 1 "now" is off for the CRM load's own transaction."""

    def before(conn: psycopg.Connection) -> None:
        for name in triggers:
            conn.execute(sql.SQL("ALTER TABLE crm_customers DISABLE TRIGGER {}").format(sql.Identifier(name)))

    return before


def _customers_after(triggers: list[str]) -> Callable[[psycopg.Connection], None]:
    def after(conn: psycopg.Connection) -> None:
        for name in triggers:
            conn.execute(sql.SQL("ALTER TABLE crm_customers ENABLE TRIGGER {}").format(sql.Identifier(name)))

    return after


def _lakehouse_after(conn: psycopg.Connection) -> None:
    """The lakehouse's writer counts each chain on from lakehouse_customer_chains: record where the
    seeded chains end so the next CRM change becomes version n + 1, gap-free."""
    conn.execute(
        """
        INSERT INTO lakehouse_customer_chains (customer_id, last_version)
        SELECT customer_id, max(version_number) FROM lakehouse_customers GROUP BY customer_id
        ON CONFLICT (customer_id) DO UPDATE SET last_version = greatest(
            lakehouse_customer_chains.last_version, EXCLUDED.last_version)
        """
    )


def process_history(
    dsn: str, progress: Progress, total: int, workers: int = 1, since: datetime | None = None
) -> TableResult:
    """Run the staged history through the pipeline's own batch function until nothing is due, so the
    processed table, the ledger, the rollups and financial_transactions.is_processed all agree.
    ``workers`` connections claim in parallel (the pipeline's claims never overlap).

    The history is settled data loaded in bulk, not traffic: its rows wait for the whole load before
    they are processed, so their "latency" is the seed's duration and would read as an SLA breach on
    the Monitor. Its rollup minutes (from ``since``, the seed's start) keep their counts but drop the
    latency figures (histogram, sums, SLA breaches): the Monitor shows the backfill, not a breach."""
    from opsconsole.db.connect import connect

    result = TableResult("financial_transactions_processed")
    progress.start(result.table, total)
    t0 = time.perf_counter()
    with connect(dsn, "seed") as conn:
        # Fresh tables have no statistics yet; the chunk's joins need them to pick index probes.
        for table in (
            "financial_transactions_staging",
            "financial_transactions",
            "erp_order_keys",
            "erp_orders",
        ):
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    lock = threading.Lock()
    counts = {"processed": 0, "failed": 0}

    def work() -> None:
        with connect(dsn, "seed") as conn:
            while True:
                row = conn.execute(
                    "SELECT processed_count, failed_count "
                    "FROM process_financial_batch(%s, interval '10 minutes')",
                    (HISTORY_BATCH_SIZE,),
                ).fetchone()
                processed, fails = int(row[0] or 0), int(row[1] or 0)
                if processed + fails == 0:
                    return
                with lock:
                    counts["processed"] += processed
                    counts["failed"] += fails
                progress.advance(result.table, processed + fails)

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="seed-history") as pool:
        for fut in [pool.submit(work) for _ in range(max(1, workers))]:
            fut.result()
    if since is not None:
        with connect(dsn, "seed") as conn, conn.transaction():
            window = (since.replace(second=0, microsecond=0),)
            conn.execute(
                "UPDATE financial_processing_rollup SET latency_count = 0, latency_sum_ms = 0,"
                " latency_max_ms = NULL, sla_breaches = 0 WHERE minute_bucket >= %s",
                window,
            )
            conn.execute("DELETE FROM financial_latency_rollup WHERE minute_bucket >= %s", window)
    result.rows = counts["processed"]
    result.seconds = time.perf_counter() - t0
    if counts["failed"]:
        result.note = f"{counts['failed']:,} staged history rows failed validation (see the backlog)"
    progress.done(result)
    return result


def build_jobs(
    gen: Generator, conn: psycopg.Connection, *, history: bool = True
) -> tuple[list[Job], list[TableResult], bool]:
    """The load jobs, biggest first, and the tables left out (an empty backlog). Also says whether the
    history goes through the financial pipeline (``history``)."""
    plan = gen.plan
    pipeline = history
    skipped: list[TableResult] = []

    def transactions(lo: int, hi: int) -> pl.DataFrame:
        # is_processed is the ledger's to set: the settled history is staged and processed below
        # (or, without history, nothing is processed at all).
        return gen.transactions(lo, hi).with_columns(is_processed=pl.lit(False))

    def events(part: int | None) -> Iterator[pl.DataFrame]:
        # Each job generates the sessions and keeps its part: ~1.5 µs a row, against ~15 µs to COPY it.
        for lo, hi in _ranges(plan.sessions, CHUNK // 5):
            frame = gen.events(lo, hi)
            yield frame if part is None else synth.split_events(frame)[part]

    anonymous_cols = synth.anonymous_columns(EVENT_COLUMNS)
    event_tables = (  # (table, columns, share of the events, part of split_events)
        [("ecommerce_events", EVENT_COLUMNS, 0.85, 0), (synth.ANONYMOUS_EVENTS, anonymous_cols, 0.15, 1)]
        if _has_table(conn, synth.ANONYMOUS_EVENTS)
        else [("ecommerce_events", EVENT_COLUMNS, 1.0, None)]  # a database of a release before 0029
    )
    jobs: list[Job] = [
        Job(table, cols, int(plan.sessions * 5 * share), lambda part=part: events(part))
        for table, cols, share, part in event_tables
    ]
    jobs += [
        Job(
            "financial_transactions",
            TRANSACTION_COLUMNS,
            int(plan.orders * 1.38),
            lambda: (transactions(lo, hi) for lo, hi in _ranges(plan.orders, CHUNK)),
        ),
    ]
    jobs.append(
        Job(
            "erp_orders",
            ORDER_COLUMNS,
            plan.orders,
            lambda: (gen.orders(lo, hi) for lo, hi in _ranges(plan.orders, CHUNK)),
            after=_orders_after,
        )
    )
    capture = _lake_capture_triggers(conn)
    jobs.append(
        Job(
            "crm_customers",
            CUSTOMER_COLUMNS,
            plan.customers,
            lambda: (gen.customers(lo, hi) for lo, hi in _ranges(plan.customers, CHUNK)),
            before=_customers_before(capture) if capture else None,
            after=_customers_after(capture) if capture else None,
        )
    )
    jobs.append(
        Job(
            "lakehouse_customers",
            LAKEHOUSE_COLUMNS,
            int(plan.customers * 1.88),
            lambda: (gen.lakehouse(lo, hi) for lo, hi in _ranges(plan.customers, CHUNK // 2)),
            after=_lakehouse_after,
            # After the CRM load: if something else already versioned the new customers (a
            # capture the seed could not switch off), that history stands and the seed keeps out.
            phase=2,
            skip_if_filled="already filled from crm_customers by the lakehouse's own capture",
        )
    )
    jobs.append(
        Job(
            "external_market_data",
            MARKET_COLUMNS,
            plan.market_ticks,
            lambda: (gen.market(lo, hi) for lo, hi in _ranges(plan.market_ticks, CHUNK)),
        )
    )
    if pipeline:

        def history(lo: int, hi: int) -> pl.DataFrame:
            frame = gen.transactions(lo, hi)
            return frame.filter(pl.col("is_processed")).select(STAGING_COLUMNS)

        jobs.append(
            Job(
                "financial_transactions_staging",
                STAGING_COLUMNS,
                int(plan.orders * 1.3),
                lambda: (history(lo, hi) for lo, hi in _ranges(plan.orders, CHUNK)),
                name="financial_transactions_staging (history)",
            )
        )
    if plan.staging_rows == 0:
        skipped.append(TableResult("financial_transactions_staging", status="skipped", note="--backlog 0"))
    else:
        # A transaction without an account is rejected before staging (arrival.rejects); a database of
        # a release before 0031, which the upgrade tests seed, stages it.
        aside = _has_table(conn, arrival.REJECTS)
        backlog = list(_ranges(plan.staging_rows, CHUNK))
        jobs.append(
            Job(
                "financial_transactions_staging",
                STAGING_COLUMNS,
                plan.staging_rows,
                lambda: (
                    arrival.stageable(gen.staging(lo, hi)) if aside else gen.staging(lo, hi)
                    for lo, hi in backlog
                ),
                # The pending backlog comes after the history has been processed, so it stays pending.
                phase=3,
            )
        )
        if aside:
            jobs.append(
                Job(
                    arrival.REJECTS,
                    arrival.REJECT_COLUMNS,
                    max(1, plan.staging_rows // 200),
                    lambda: (arrival.rejects(gen.staging(lo, hi), "seed") for lo, hi in backlog),
                    phase=3,
                )
            )
    return jobs, skipped, pipeline


def _secondary_indexes(conn: psycopg.Connection, table: str) -> list[tuple[str, str, str]]:
    """(schema, name, definition) of the table's plain indexes: not unique, not backing a constraint.
    Definitions come from pg_get_indexdef(), i.e. the server's own DDL for them. Partitioned tables
    are left alone: their index definitions read "ON ONLY parent", which would not rebuild the
    partitions' indexes."""
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname, pg_get_indexdef(i.indexrelid)
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_class t ON t.oid = i.indrelid
        WHERE i.indrelid = to_regclass(%s) AND NOT i.indisunique AND NOT i.indisprimary
          AND t.relkind = 'r'
          AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
        ORDER BY c.relname
        """,
        (table,),
    ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def run_job(dsn: str, job: Job, progress: Progress) -> TableResult:
    """Load one table in one transaction. The table is empty here (seed refuses otherwise), so for a
    big load its plain indexes are dropped and rebuilt after the COPY: a sorted build is ~1.5x faster
    overall than maintaining the indexes row by row (measured on ecommerce_events: 39k -> 60k rows/s).
    Everything is transactional: a failure leaves the table and its indexes as they were."""
    from opsconsole.db.connect import connect

    result = TableResult(job.label, relation=job.table)
    progress.start(job.label, job.total)
    t0 = time.perf_counter()
    with connect(dsn, "seed", autocommit=False) as conn:
        if job.skip_if_filled:
            filled = conn.execute(
                sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(job.table))
            )
            if filled.fetchone()[0]:
                result.status, result.note = "skipped", job.skip_if_filled
                progress.done(result)
                return result
        conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        if job.before:
            job.before(conn)
        indexes = _secondary_indexes(conn, job.table) if job.total > REBUILD_INDEXES_ABOVE else []
        for schema, name, _definition in indexes:
            conn.execute(sql.SQL("DROP INDEX {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
        with conn.cursor() as cur:
            result.rows = copy_frames(
                cur, job.table, job.columns, job.chunks(), on_rows=lambda n: progress.advance(job.label, n)
            )
        for _schema, _name, definition in indexes:
            conn.execute(sql.SQL(definition))  # pg_get_indexdef() output, not user text
        if job.table == arrival.TABLE and _loaders_count_arrivals(conn):
            arrival.staged(conn, result.rows, source="seed")
        if job.after:
            job.after(conn)
        conn.commit()
    result.seconds = time.perf_counter() - t0
    progress.done(result)
    return result


def seed(
    dsn: str,
    plan: SeedPlan,
    *,
    truncate_first: bool = False,
    if_empty: bool = False,
    jobs: int = 2,
    progress: Progress | None = None,
    history: bool = True,
) -> dict:
    """Generate and load the demo dataset. Returns a summary (per-table rows, seconds, rows/s).

    With ``history`` and the financial pipeline installed, the settled transactions are staged and
    processed by the pipeline (so is_processed, the processed table and the ledger agree); without it
    every seeded transaction stays unprocessed, which is just as consistent and much faster at scale.
    """
    from opsconsole.db.connect import connect

    progress = progress or Progress()
    started = time.perf_counter()
    with connect(dsn, "seed") as conn:
        if conn.execute("SELECT to_regclass('crm_customers') IS NULL").fetchone()[0]:
            raise OpsError("This database has no platform schema yet: run `opsconsole db migrate` first.")
        began = conn.execute("SELECT now()").fetchone()[0]
        counts = seeded_row_counts(conn, exact=not truncate_first)
        truncated: list[str] = []
        if counts and not truncate_first:
            if if_empty:
                return {"status": "skipped", "reason": "the database already holds data", "existing": counts}
            listing = ", ".join(f"{t} ({n:,} rows)" for t, n in counts.items())
            raise OpsError(
                f"The database already holds data: {listing}. Pass --truncate to empty these tables first "
                "(or --if-empty to leave them as they are)."
            )
        if truncate_first:
            truncated = truncate(conn)
        gen = Generator(plan)
        job_list, results, pipeline = build_jobs(gen, conn, history=history)

    errors: list[BaseException] = []
    lock = threading.Lock()
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="seed") as pool:
        # phase 3 processes the staged history (before the backlog, which has no job with --backlog 0)
        for phase in sorted({job.phase for job in job_list} | ({3} if pipeline else set())):
            if phase == 3 and pipeline and not errors:
                history_rows = sum(r.rows for r in results if r.table.endswith("(history)"))
                try:
                    results.append(process_history(dsn, progress, history_rows, since=began))
                except psycopg.Error as exc:
                    errors.append(exc)
                    break
            futures = [pool.submit(run_job, dsn, job, progress) for job in job_list if job.phase == phase]
            for fut in futures:
                try:
                    res = fut.result()
                    with lock:
                        results.append(res)
                except BaseException as exc:  # collected; the first one is raised after all finished
                    errors.append(exc)
            if errors:
                break
    if errors:
        exc = errors[0]
        if isinstance(exc, psycopg.Error):
            raise OpsError(f"Loading failed: {str(exc).strip().splitlines()[0]}") from None
        raise exc

    with connect(dsn, "seed") as conn:
        anonymous = (synth.ANONYMOUS_EVENTS,) if _has_table(conn, synth.ANONYMOUS_EVENTS) else ()
        _set_identity(conn, "ecommerce_events", "event_id", also=anonymous)
        _set_identity(conn, "external_market_data", "tick_id")
        lineage = seed_lineage(conn)
        results.append(lineage)
        c360 = refresh_customer_360(conn)
        t0 = time.perf_counter()
        analyzed = sorted({r.relation or r.table for r in results if r.status == "loaded" and r.rows > 0})
        if "erp_orders" in analyzed:
            analyzed.append("erp_order_keys")
        if "financial_transactions_processed" in analyzed:
            analyzed.append("financial_transaction_ledger")
        for table in analyzed:
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
        analyze_s = time.perf_counter() - t0
        total_rows = sum(r.rows for r in results if r.status == "loaded")
        seconds = time.perf_counter() - started
        summary = {
            "status": "seeded",
            "customers": plan.customers,
            "seed": plan.seed,
            "as_of": plan.as_of.isoformat(),
            "truncated": truncated,
            "tables": [r.as_dict() for r in sorted(results, key=lambda r: r.table)],
            "total_rows": total_rows,
            "seconds": round(seconds, 2),
            "rows_per_s": round(total_rows / seconds) if seconds > 0 else 0,
            "analyze_seconds": round(analyze_s, 2),
            "customer_360": c360,
        }
        _audit(conn, plan, summary, seconds)
    return summary


def refresh_customer_360(conn: psycopg.Connection) -> dict:
    """Rebuild customer 360 from the freshly seeded sources.

    The capture triggers queued every seeded customer; one full refresh is cheaper than draining that
    queue incrementally and leaves the queue empty."""
    row = conn.execute("SELECT rows_processed, refresh_duration FROM refresh_customer_360_full()").fetchone()
    return {"rows": row[0], "seconds": round(row[1].total_seconds(), 2)}


def seed_lineage(conn: psycopg.Connection) -> TableResult:
    """The platform's flows into data_lineage, once (rows already there are left alone)."""
    t0 = time.perf_counter()
    cols = [
        "source_table",
        "source_column",
        "target_table",
        "target_column",
        "transformation_logic",
        "pipeline_name",
    ]
    with conn.cursor() as cur:
        cur.execute(
            """
            INSERT INTO data_lineage (source_table, source_column, target_table, target_column,
                                      transformation_logic, pipeline_name)
            SELECT l.*
            FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[])
                 AS l(source_table, source_column, target_table, target_column,
                      transformation_logic, pipeline_name)
            WHERE NOT EXISTS (
                SELECT 1 FROM data_lineage d
                WHERE d.source_table = l.source_table AND d.target_table = l.target_table
                  AND d.source_column IS NOT DISTINCT FROM l.source_column
                  AND d.target_column IS NOT DISTINCT FROM l.target_column
                  AND d.pipeline_name IS NOT DISTINCT FROM l.pipeline_name)
            ON CONFLICT DO NOTHING
            """,
            [[row[i] for row in LINEAGE] for i in range(len(cols))],
        )
        n = cur.rowcount
    rows = max(n, 0)
    return TableResult(
        "data_lineage",
        rows=rows,
        seconds=time.perf_counter() - t0,
        note="" if rows else "flows already recorded",
    )


def _audit(conn: psycopg.Connection, plan: SeedPlan, summary: dict, seconds: float) -> None:
    import json

    conn.execute(
        "SELECT record_audit('seed', %s::jsonb, %s::jsonb, 'ok', %s::numeric, NULL)",
        (
            json.dumps({"customers": plan.customers, "seed": plan.seed, "as_of": plan.as_of.isoformat()}),
            json.dumps({"total_rows": summary["total_rows"], "rows_per_s": summary["rows_per_s"]}),
            round(seconds * 1000, 3),
        ),
    )


def parse_as_of(text: str | None) -> datetime:
    if not text:
        return default_as_of()
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise OpsError(f"--as-of {text!r} is not a date or timestamp (use e.g. 2025-01-31).") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
