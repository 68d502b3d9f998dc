"""Live traffic: financial micro-batches into staging, a continuous e-commerce event stream, CRM
changes in bursts and market ticks, with faults injected at chosen rates.

Two halves:
- ``generate_tick(cfg, tick)`` is a pure function of (config, tick) that returns polars frames. Every
  row is a pure function of its global counter (row g of the financial stream, row e of the event
  stream, ...), so a tick can be regenerated, a duplicate can recompute the exact row it copies, and
  tests can measure fault rates without a database. Columns whose name starts with "_" are labels
  (which fault a row carries) and are never loaded.
- ``run(...)`` keeps a schedule of ticks against the wall clock, COPYs each tick's frames in one
  transaction, notifies 'opsconsole_staging', and reports achieved against asked rates. When it falls
  behind it merges the due ticks into one larger COPY; when even that cannot keep up it says so.

Faults (each a share of the stream it applies to; kinds within a stream are mutually exclusive):
- invalid (staging): NULL transaction_id, NULL account_id, NULL amount, unknown transaction_type,
  absurd amount (>= 1e12) or a timestamp in the future (1 hour to 30 days ahead); a row without an
  account is rejected into financial_staging_rejects rather than staged (pipeline.arrival.load);
- duplicate (staging): an exact re-delivery of an earlier clean row's payload (transaction_id,
  account, timestamp, amount, type, reference_data); batch_id is the envelope of the micro-batch it
  arrives in;
- conflict (staging): an earlier clean row's transaction_id with a different amount;
- late (staging and events): event time 2 minutes to 6 hours before the row's scheduled time;
- out_of_order (staging and events): event time 1 to 60 seconds older than the rows that arrived
  before it;
- cross_system_dup (new CRM customers): an existing person arriving from another source system with
  the same e-mail in another case and/or surrounded by whitespace.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace

import polars as pl

from opsconsole.datagen import synth
from opsconsole.datagen.rng import Rng
from opsconsole.errors import OpsError
from opsconsole.pipeline import arrival
from opsconsole.pipeline.copyio import STAGING_COLUMNS

US = 1_000_000
FAULT_KINDS = ("invalid", "duplicate", "conflict", "late", "out_of_order")
EVENT_FAULT_KINDS = ("late", "out_of_order")
INVALID_KINDS = (
    "null_transaction_id",
    "null_account_id",
    "null_amount",
    "unknown_type",
    "absurd_amount",
    "future_timestamp",
)
UNKNOWN_TYPES = ["teleport", "PAYMENT ", "xfer", "refund?", "giftcard"]
TYPE_WEIGHTS = {"payment": 70, "refund": 12, "transfer": 5, "fee": 8, "adjustment": 4, "chargeback": 1}
DUP_WINDOW = 2000  # duplicates and conflicts copy one of the previous DUP_WINDOW rows
LATE_MIN_S, LATE_MAX_S = 120, 6 * 3600
OOO_MIN_S, OOO_MAX_S = 1, 60
FUTURE_MIN_S, FUTURE_MAX_S = 3600, 30 * 86400

EVENT_COLUMNS = [
    "session_id",
    "customer_id",
    "event_timestamp",
    "event_type",
    "event_data",
    "page_url",
    "user_agent",
    "ip_address",
]
CRM_NEW_COLUMNS = [
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
MARKET_COLUMNS = ["symbol", "timestamp", "price", "volume", "metadata"]


@dataclass(frozen=True)
class FaultRates:
    invalid: float = 0.0
    duplicate: float = 0.0
    conflict: float = 0.0
    late: float = 0.0
    out_of_order: float = 0.0
    cross_system_dup: float = 0.0

    def validate(self) -> None:
        for name, value in self.__dict__.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')}-rate must be between 0 and 1 (got {value}).")
        staged = self.invalid + self.duplicate + self.conflict + self.late + self.out_of_order
        if staged > 1.0:
            raise ValueError(
                f"The staging fault rates add up to {staged:.3f}; they must add up to at most 1."
            )


@dataclass(frozen=True, eq=False)
class SimConfig:
    """Everything a tick depends on. start_us is the event time of tick 0 (epoch microseconds)."""

    seed: int = 1
    rate: float = 1000.0  # financial rows per second into staging
    tick_seconds: float = 0.2
    events_rate: float = 100.0
    market_rate: float = 16.0
    crm_burst_every: float = 5.0  # seconds between CRM bursts
    crm_burst_updates: int = 50
    crm_burst_new: int = 10
    faults: FaultRates = field(default_factory=FaultRates)
    start_us: int = 0
    transaction_id_base: int = 1
    customer_id_max: int = 0  # customers 1..max exist
    order_id_max: int = 0  # orders 1..max exist
    new_customer_base: int = 1  # first customer_id for simulated sign-ups
    batch_prefix: str = "sim"
    email_pool: pl.DataFrame | None = None  # customer_id, first_name, last_name, email

    @property
    def burst_ticks(self) -> int:
        return max(1, round(self.crm_burst_every / self.tick_seconds))


def _span(tick: int, per_second: float, dt: float) -> tuple[int, int]:
    """Global counter range [lo, hi) of a stream's rows in a tick (exact for any rate)."""
    per_tick = per_second * dt
    return math.floor(tick * per_tick + 1e-9), math.floor((tick + 1) * per_tick + 1e-9)


# --------------------------------------------------------------------------------------------------
# Financial stream
# --------------------------------------------------------------------------------------------------
def _fault_kind(u: pl.Expr, f: FaultRates) -> pl.Expr:
    """The fault of a financial row (null for a clean row) from its 'fin.fault' uniform ``u``:
    cumulative shares in FAULT_KINDS order."""
    out = pl.when(pl.lit(False)).then(pl.lit(None, dtype=pl.String))
    acc = 0.0
    for kind in FAULT_KINDS:
        share = getattr(f, kind)
        if share <= 0:
            continue
        acc += share
        out = out.when(u < acc).then(pl.lit(kind))
    return out.otherwise(pl.lit(None, dtype=pl.String))


def _total_fault_share(f: FaultRates) -> float:
    return sum(getattr(f, kind) for kind in FAULT_KINDS)


def _scheduled_us(cfg: SimConfig, rng: Rng, g: pl.Expr) -> pl.Expr:
    """Event time of financial row g: its slot at the asked rate, jittered within the slot."""
    slot = US / cfg.rate
    return pl.lit(cfg.start_us, dtype=pl.Int64) + (
        g.cast(pl.Float64) * slot + rng.uniform("fin.jitter", g) * slot * 0.9
    ).cast(pl.Int64)


def _with_base_payload(cfg: SimConfig, rng: Rng, frame: pl.DataFrame, row: str) -> pl.DataFrame:
    """Adds the clean payload of the financial row whose counter is in column ``row``."""
    r = pl.col(row)
    customers = max(cfg.customer_id_max, 1000)
    frame = frame.with_columns(
        _customer=rng.randint("fin.customer", r, 1, customers + 1),
        transaction_type=rng.choice("fin.type", r, list(TYPE_WEIGHTS), list(TYPE_WEIGHTS.values())),
        _usd=rng.lognormal("fin.amount", r, 60.0, 1.0),
        _adj=(rng.uniform("fin.adj", r) - 0.5) * 40,
        _currency=rng.choice("fin.currency", r, synth.CURRENCIES, [50, 20, 12, 8, 5, 3, 2]),
        _channel=rng.choice("fin.channel", r, ["web", "store", "phone", "app"], [5, 2, 1, 2]),
        _order=(
            rng.randint("fin.order", r, 1, cfg.order_id_max + 1).cast(pl.String)
            if cfg.order_id_max > 0
            else pl.lit(None, dtype=pl.String)
        ),
        _cp=rng.randint("fin.cp", r, 1, customers + 1) * 10 + 1,
        ts_us=_scheduled_us(cfg, rng, r),
    )
    ttype = pl.col("transaction_type")
    usd = pl.col("_usd")
    frame = frame.with_columns(
        transaction_id=pl.lit(cfg.transaction_id_base, dtype=pl.Int64) + r,
        account_id=synth.account_for(rng, pl.col("_customer"), r),
        amount=(
            pl.when(ttype.is_in(["refund", "chargeback"]))
            .then(-usd)
            .when(ttype == "fee")
            .then(-(0.3 + usd * 0.029))
            .when(ttype == "adjustment")
            .then(pl.col("_adj"))
            .otherwise(usd)
        ).round(2),
        reference_data=pl.when(ttype == "transfer")
        .then(
            pl.struct(
                counterparty_account=pl.col("_cp"),
                currency=pl.col("_currency"),
                source=pl.lit(cfg.batch_prefix),
            ).struct.json_encode()
        )
        .otherwise(
            pl.struct(
                order_id=pl.col("_order"),
                currency=pl.col("_currency"),
                channel=pl.col("_channel"),
                source=pl.lit(cfg.batch_prefix),
            ).struct.json_encode()
        ),
    )
    return frame.drop("_customer", "_usd", "_adj", "_currency", "_channel", "_order", "_cp")


def financial_rows(cfg: SimConfig, lo: int, hi: int) -> pl.DataFrame:
    """Financial rows lo..hi-1 as they arrive (faults applied), with labels _g, _fault, _invalid,
    _source_g (the row a duplicate/conflict copies) and _scheduled_us (the row's clean event time)."""
    rng = Rng(cfg.seed)
    f = cfg.faults
    clean_from = _total_fault_share(f)  # a row is clean when its fault uniform is >= this
    frame = pl.DataFrame({"_g": pl.int_range(lo, hi, dtype=pl.Int64, eager=True)})
    g = pl.col("_g")
    window = pl.min_horizontal(g, pl.lit(DUP_WINDOW, dtype=pl.Int64))
    frame = frame.with_columns(
        _u=rng.uniform("fin.fault", g),
        **{f"_c{i}": g - 1 - rng.below(f"fin.src.{i}", g, window) for i in range(3)},
    )
    frame = frame.with_columns(
        _fault=_fault_kind(pl.col("_u"), f),
        **{f"_c{i}_clean": rng.uniform("fin.fault", pl.col(f"_c{i}")) >= clean_from for i in range(3)},
    )
    # A duplicate/conflict copies the first of three earlier candidates that went out clean; with no
    # clean candidate (or no earlier row at all) the row goes out clean itself.
    source = pl.when(g < 1).then(pl.lit(None, dtype=pl.Int64))
    for i in range(3):
        source = source.when(pl.col(f"_c{i}_clean")).then(pl.col(f"_c{i}"))
    source = source.otherwise(pl.lit(None, dtype=pl.Int64))
    frame = frame.with_columns(
        _source_g=pl.when(pl.col("_fault").is_in(["duplicate", "conflict"])).then(source)
    )
    frame = frame.with_columns(
        _fault=pl.when(pl.col("_fault").is_in(["duplicate", "conflict"]) & pl.col("_source_g").is_null())
        .then(pl.lit(None, dtype=pl.String))
        .otherwise(pl.col("_fault")),
        _row=pl.coalesce(pl.col("_source_g"), g),
        _scheduled_us=_scheduled_us(cfg, rng, g),
        _invalid_pick=rng.randint("fin.invalid", g, 0, len(INVALID_KINDS)),
        _late_s=LATE_MIN_S + rng.uniform("fin.late", g) * (LATE_MAX_S - LATE_MIN_S),
        _ooo_s=max(OOO_MIN_S, 3.0 / cfg.rate) + rng.uniform("fin.ooo", g) * (OOO_MAX_S - OOO_MIN_S),
        _future_s=FUTURE_MIN_S + rng.uniform("fin.future", g) * (FUTURE_MAX_S - FUTURE_MIN_S),
        _absurd=(1e12 * (1 + 99 * rng.uniform("fin.absurd", g))).round(2),
        _conflict_k=1.5 + rng.uniform("fin.conflict", g),
        _unknown=rng.choice("fin.unknown", g, UNKNOWN_TYPES),
    )
    frame = _with_base_payload(cfg, rng, frame, "_row")
    fault = pl.col("_fault")
    frame = frame.with_columns(
        _invalid=pl.when(fault == "invalid")
        .then(pl.lit(pl.Series(INVALID_KINDS)).gather(pl.col("_invalid_pick")))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    inv = pl.col("_invalid")
    frame = frame.with_columns(
        transaction_id=pl.when(inv == "null_transaction_id")
        .then(pl.lit(None, dtype=pl.Int64))
        .otherwise(pl.col("transaction_id")),
        account_id=pl.when(inv == "null_account_id")
        .then(pl.lit(None, dtype=pl.Int64))
        .otherwise(pl.col("account_id")),
        amount=pl.when(inv == "null_amount")
        .then(pl.lit(None, dtype=pl.Float64))
        .when(inv == "absurd_amount")
        .then(pl.col("_absurd"))
        .when(fault == "conflict")
        .then((pl.col("amount") * pl.col("_conflict_k") + 0.01).round(2))
        .otherwise(pl.col("amount")),
        transaction_type=pl.when(inv == "unknown_type")
        .then(pl.col("_unknown"))
        .otherwise(pl.col("transaction_type")),
        ts_us=pl.when(inv == "future_timestamp")
        .then(pl.col("ts_us") + (pl.col("_future_s") * US).cast(pl.Int64))
        .when(fault == "late")
        .then(pl.col("ts_us") - (pl.col("_late_s") * US).cast(pl.Int64))
        .when(fault == "out_of_order")
        .then(pl.col("ts_us") - (pl.col("_ooo_s") * US).cast(pl.Int64))
        .otherwise(pl.col("ts_us")),
    )
    return frame.select(
        "_g",
        "_fault",
        "_invalid",
        "_source_g",
        "_scheduled_us",
        *STAGING_COLUMNS[:2],
        pl.col("ts_us").cast(pl.Datetime("us", "UTC")).alias("transaction_timestamp"),
        "amount",
        "transaction_type",
        "reference_data",
    )


# --------------------------------------------------------------------------------------------------
# E-commerce, CRM and market streams
# --------------------------------------------------------------------------------------------------
def event_rows(cfg: SimConfig, lo: int, hi: int) -> pl.DataFrame:
    """E-commerce events lo..hi-1 (event_id comes from the table's identity, processed_at from its
    default), with labels _e, _fault and _scheduled_us."""
    rng = Rng(cfg.seed)
    f = cfg.faults
    frame = pl.DataFrame({"_e": pl.int_range(lo, hi, dtype=pl.Int64, eager=True)})
    e = pl.col("_e")
    rate = max(cfg.events_rate, 1e-9)
    slot = US / rate
    customers = max(cfg.customer_id_max, 1000)
    frame = frame.with_columns(
        _u=rng.uniform("ev.fault", e),
        customer_id=pl.when(rng.uniform("ev.logged", e) < 0.8).then(
            rng.randint("ev.customer", e, 1, customers + 1)
        ),
        _scheduled_us=pl.lit(cfg.start_us, dtype=pl.Int64) + (e.cast(pl.Float64) * slot).cast(pl.Int64),
        event_type=rng.choice("ev.type", e, synth.EVENT_TYPES, [35, 40, 17, 8]),
        _late_s=LATE_MIN_S + rng.uniform("ev.late", e) * (LATE_MAX_S - LATE_MIN_S),
        _ooo_s=max(OOO_MIN_S, 3.0 / rate) + rng.uniform("ev.ooo", e) * (OOO_MAX_S - OOO_MIN_S),
        _pick=rng.randint("ev.product", e, 0, synth.PRODUCTS // 10),
    )
    frame = frame.with_columns(
        _fault=pl.when(pl.col("_u") < f.late)
        .then(pl.lit("late"))
        .when(pl.col("_u") < f.late + f.out_of_order)
        .then(pl.lit("out_of_order"))
        .otherwise(pl.lit(None, dtype=pl.String)),
        # A visit is a customer's half hour on the site (anonymous visitors: a run of 7 events).
        _session_key=pl.when(pl.col("customer_id").is_not_null())
        .then(pl.col("customer_id") * 1_000_003 + pl.col("_scheduled_us") // (1800 * US))
        .otherwise(-(e // 7) - 1),
        _device_key=pl.col("customer_id").fill_null(-e - 1),
    )
    frame = frame.with_columns(
        # Each customer leans to one category (their favourite in the customer 360).
        _cat=rng.randint("ev.cat", pl.col("_device_key"), 0, len(synth.CATEGORIES)),
        session_id=rng.uuid("ev.session", pl.col("_session_key")),
        user_agent=synth.device_columns(rng, pl.col("_device_key"))["user_agent"],
        ip_address=synth.ip_address(rng, pl.col("_device_key")),
    )
    frame = frame.with_columns(_product=(pl.col("_pick") * 10 + pl.col("_cat")).clip(1, synth.PRODUCTS))
    frame = frame.with_columns(**synth.event_payload(rng, e, pl.col("event_type"), pl.col("_product")))
    ts = (
        pl.when(pl.col("_fault") == "late")
        .then(pl.col("_scheduled_us") - (pl.col("_late_s") * US).cast(pl.Int64))
        .when(pl.col("_fault") == "out_of_order")
        .then(pl.col("_scheduled_us") - (pl.col("_ooo_s") * US).cast(pl.Int64))
        .otherwise(pl.col("_scheduled_us"))
    )
    return frame.select(
        "_e",
        "_fault",
        "_scheduled_us",
        *[ts.cast(pl.Datetime("us", "UTC")).alias(c) if c == "event_timestamp" else c for c in EVENT_COLUMNS],
    )


def crm_burst(cfg: SimConfig, burst: int, tick_us: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One CRM burst: (updates of existing customers, new customers). New customers carry _fault
    'cross_system_dup' when they are an existing person arriving from another system, with
    _dup_of_id and _dup_of_email (the canonical address they duplicate)."""
    rng = Rng(cfg.seed)
    ts = pl.lit(tick_us, dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))
    n_upd = cfg.crm_burst_updates if cfg.customer_id_max > 0 else 0
    upd = pl.DataFrame(
        {"_k": pl.int_range(burst * 100_000, burst * 100_000 + n_upd, dtype=pl.Int64, eager=True)}
    )
    k = pl.col("_k")
    upd = upd.with_columns(
        customer_id=rng.randint("crm.upd.customer", k, 1, max(cfg.customer_id_max, 1) + 1),
        _pid=rng.randint("crm.upd.pid", k, 1, 1 << 40),
    )
    person = synth.person_columns(rng, pl.col("_pid"))
    upd = upd.with_columns(phone=person["phone"], _country=person["country_idx"])
    upd = upd.with_columns(_city=pl.col("_country") * 6 + rng.randint("crm.upd.city", k, 0, 6))
    upd = upd.select(
        "customer_id",
        "phone",
        synth.address_struct(rng, k, pl.col("_country"), pl.col("_city"))
        .struct.json_encode()
        .alias("address"),
        ts.alias("updated_at"),
    )

    n_new = cfg.crm_burst_new
    new = pl.DataFrame({"_j": pl.int_range(burst * n_new, (burst + 1) * n_new, dtype=pl.Int64, eager=True)})
    j = pl.col("_j")
    pool = cfg.email_pool
    if pool is not None and pool.height > 0:
        pick = rng.randint("crm.xdup.pick", j, 0, pool.height)
        new = new.with_columns(
            _dup=rng.uniform("crm.xdup", j) < cfg.faults.cross_system_dup,
            _pick=pick,
        )
        new = new.with_columns(
            _src_first=pl.lit(pool["first_name"]).gather(pl.col("_pick")),
            _src_last=pl.lit(pool["last_name"]).gather(pl.col("_pick")),
            _src_email=pl.lit(pool["email"]).gather(pl.col("_pick")).str.strip_chars().str.to_lowercase(),
            _src_id=pl.lit(pool["customer_id"]).gather(pl.col("_pick")),
        )
    else:
        # No existing customers known: the duplicate is one of the earlier simulated sign-ups.
        new = new.with_columns(
            _dup=(rng.uniform("crm.xdup", j) < cfg.faults.cross_system_dup) & (j > 0),
            _src_id=pl.lit(cfg.new_customer_base, dtype=pl.Int64) + rng.below("crm.xdup.src", j, j),
        )
        src = synth.person_columns(rng, pl.col("_src_id"))
        new = new.with_columns(
            _src_first=src["first_name"], _src_last=src["last_name"], _src_email=src["email"]
        )
    new = new.with_columns(customer_id=pl.lit(cfg.new_customer_base, dtype=pl.Int64) + j)
    me = synth.person_columns(rng, pl.col("customer_id"))
    new = new.with_columns(
        _first=me["first_name"],
        _last=me["last_name"],
        _email=me["email"],
        phone=me["phone"],
        _country=me["country_idx"],
        _variant=synth.email_variant(rng, j, pl.col("_src_email")),
        customer_uuid=rng.uuid("crm.new.uuid", pl.col("customer_id")),
        _sys=rng.choice("crm.xdup.sys", j, ["ecommerce", "erp"]),
    )
    new = new.with_columns(_city=pl.col("_country") * 6 + rng.randint("crm.new.city", j, 0, 6))
    dup = pl.col("_dup")
    return upd, new.select(
        "customer_id",
        "customer_uuid",
        pl.when(dup).then(pl.col("_src_first")).otherwise(pl.col("_first")).alias("first_name"),
        pl.when(dup).then(pl.col("_src_last")).otherwise(pl.col("_last")).alias("last_name"),
        pl.when(dup).then(pl.col("_variant")).otherwise(pl.col("_email")).alias("email"),
        "phone",
        synth.address_struct(rng, j, pl.col("_country"), pl.col("_city"))
        .struct.json_encode()
        .alias("address"),
        ts.alias("created_at"),
        ts.alias("updated_at"),
        pl.when(dup).then(pl.col("_sys")).otherwise(pl.lit("crm")).alias("source_system"),
        pl.when(dup)
        .then(pl.lit("cross_system_dup"))
        .otherwise(pl.lit(None, dtype=pl.String))
        .alias("_fault"),
        pl.when(dup)
        .then(pl.col("_src_email"))
        .otherwise(pl.lit(None, dtype=pl.String))
        .alias("_dup_of_email"),
        pl.when(dup).then(pl.col("_src_id")).otherwise(pl.lit(None, dtype=pl.Int64)).alias("_dup_of_id"),
    )


def market_rows(cfg: SimConfig, lo: int, hi: int) -> pl.DataFrame:
    rng = Rng(cfg.seed)
    frame = pl.DataFrame({"_m": pl.int_range(lo, hi, dtype=pl.Int64, eager=True)})
    m = pl.col("_m")
    n_sym = len(synth.MARKET_SYMBOLS)
    sym = (m % n_sym).cast(pl.Int64)
    step = m // n_sym
    p0 = synth.gather([s[1] for s in synth.MARKET_SYMBOLS], sym)
    phase = sym.cast(pl.Float64) * 0.7
    # A smooth daily swing plus tick noise: a pure function of the tick counter (no running state).
    price = p0 * (1 + 0.02 * (step.cast(pl.Float64) / 300.0 + phase).sin() + 0.002 * rng.normal("mkt.px", m))
    slot = US / max(cfg.market_rate, 1e-9)
    return frame.with_columns(
        symbol=synth.gather([s[0] for s in synth.MARKET_SYMBOLS], sym),
        timestamp=(pl.lit(cfg.start_us, dtype=pl.Int64) + (m.cast(pl.Float64) * slot).cast(pl.Int64)).cast(
            pl.Datetime("us", "UTC")
        ),
        price=price.round(4),
        volume=rng.lognormal("mkt.vol", m, 400.0, 1.2).round(0).cast(pl.Int64) + 1,
        metadata=pl.struct(
            exchange=synth.gather([s[2] for s in synth.MARKET_SYMBOLS], sym),
            currency=synth.gather([s[3] for s in synth.MARKET_SYMBOLS], sym),
            source=pl.lit("simulate"),
        ).struct.json_encode(),
    )


@dataclass
class TickFrames:
    first_tick: int
    last_tick: int  # inclusive
    staging: pl.DataFrame
    events: pl.DataFrame
    crm_updates: pl.DataFrame
    crm_new: pl.DataFrame
    market: pl.DataFrame


def generate_ticks(cfg: SimConfig, first: int, stop: int) -> TickFrames:
    """Everything that arrives in ticks first..stop-1, as one set of frames (a catching-up runner
    loads several due ticks at once). Identical to concatenating generate_tick over the range."""
    dt = cfg.tick_seconds
    glo, _ = _span(first, cfg.rate, dt)
    _, ghi = _span(stop - 1, cfg.rate, dt)
    batch_ids = []
    for t in range(first, stop):
        lo, hi = _span(t, cfg.rate, dt)
        batch_ids.extend([f"{cfg.batch_prefix}-{t}"] * (hi - lo))
    staging = financial_rows(cfg, glo, ghi).with_columns(batch_id=pl.Series(batch_ids, dtype=pl.String))
    elo, _ = _span(first, cfg.events_rate, dt)
    _, ehi = _span(stop - 1, cfg.events_rate, dt)
    mlo, _ = _span(first, cfg.market_rate, dt)
    _, mhi = _span(stop - 1, cfg.market_rate, dt)
    updates, new = [_EMPTY_UPDATES], [_EMPTY_NEW]
    for t in range(first, stop):
        if t % cfg.burst_ticks == 0:
            u, n = crm_burst(cfg, t // cfg.burst_ticks, cfg.start_us + int(t * dt * US))
            updates.append(u)
            new.append(n)
    return TickFrames(
        first,
        stop - 1,
        staging,
        event_rows(cfg, elo, ehi),
        pl.concat(updates, how="vertical_relaxed"),
        pl.concat(new, how="vertical_relaxed"),
        market_rows(cfg, mlo, mhi),
    )


def generate_tick(cfg: SimConfig, tick: int) -> TickFrames:
    """Everything that arrives in one tick: a pure function of (cfg, tick)."""
    return generate_ticks(cfg, tick, tick + 1)


_EMPTY_UPDATES = pl.DataFrame(
    schema={
        "customer_id": pl.Int64,
        "phone": pl.String,
        "address": pl.String,
        "updated_at": pl.Datetime("us", "UTC"),
    }
)
_EMPTY_NEW = pl.DataFrame(
    schema={
        "customer_id": pl.Int64,
        "customer_uuid": pl.String,
        "first_name": pl.String,
        "last_name": pl.String,
        "email": pl.String,
        "phone": pl.String,
        "address": pl.String,
        "created_at": pl.Datetime("us", "UTC"),
        "updated_at": pl.Datetime("us", "UTC"),
        "source_system": pl.String,
        "_fault": pl.String,
        "_dup_of_email": pl.String,
        "_dup_of_id": pl.Int64,
    }
)


# --------------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------------
MAX_CATCHUP_TICKS = 25  # at most this many due ticks go into one COPY when behind
RATE_WINDOW_S = 5.0  # the "now" rate is measured over this window
HOLD_SHARE = 0.95  # achieved / asked below this means the rate was not held
AUDIT_PATIENCE_S = 30.0  # how long the final audit row waits for a database that went away


@dataclass
class SimStats:
    """What the runner has done so far (also the final report)."""

    asked_rate: float
    started: float = field(default_factory=time.monotonic)
    elapsed_s: float = 0.0
    ticks: int = 0
    batches: int = 0
    staging_rows: int = 0  # staged
    staging_rejected: int = 0  # rejected before staging: no account (financial_staging_rejects)
    event_rows: int = 0
    crm_updates: int = 0
    crm_new: int = 0
    market_rows: int = 0
    faults: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys((*FAULT_KINDS, "cross_system_dup"), 0)
    )
    event_faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_FAULT_KINDS, 0))
    lag_s: float = 0.0
    max_lag_s: float = 0.0
    window_rate: float = 0.0
    outages: int = 0  # times the database went away during the run
    outage_s: float = 0.0  # seconds spent reconnecting (not counted against the rate)
    skipped_ticks: int = 0  # ticks that fell due during an outage and were not generated
    _window: deque = field(default_factory=deque)

    @property
    def achieved_rate(self) -> float:
        """Rows per second the feed delivered (staged or rejected) while the database was there
        (outages are reported apart)."""
        up = self.elapsed_s - self.outage_s
        return (self.staging_rows + self.staging_rejected) / up if up > 0 else 0.0

    @property
    def behind(self) -> bool:
        return self.lag_s > 1.0

    @property
    def held(self) -> bool:
        return self.achieved_rate >= HOLD_SHARE * self.asked_rate and self.lag_s <= 1.0

    def as_dict(self) -> dict:
        return {
            "seconds": round(self.elapsed_s, 2),
            "asked_rate": self.asked_rate,
            "achieved_rate": round(self.achieved_rate, 1),
            "held_rate": self.held,
            "staging_rows": self.staging_rows,
            "staging_rejected": self.staging_rejected,
            "event_rows": self.event_rows,
            "crm_updates": self.crm_updates,
            "crm_new_customers": self.crm_new,
            "market_ticks": self.market_rows,
            "faults": dict(self.faults),
            "event_faults": dict(self.event_faults),
            "ticks": self.ticks,
            "batches": self.batches,
            "max_lag_s": round(self.max_lag_s, 2),
            "outages": self.outages,
            "outage_s": round(self.outage_s, 2),
            "skipped_ticks": self.skipped_ticks,
        }

    def describe(self) -> str:
        """One line for people: achieved vs asked, and plainly whether the rate holds."""
        head = (
            f"financial {self.window_rate:,.0f} rows/s now, {self.achieved_rate:,.0f} avg "
            f"(asked {self.asked_rate:,.0f})"
        )
        line = (
            f"{head} · events {self.event_rows:,} · crm {self.crm_updates:,} upd/{self.crm_new:,} new · "
            f"market {self.market_rows:,} · faults "
            + " ".join(f"{k}={v:,}" for k, v in self.faults.items() if v)
        )
        if self.staging_rejected:
            line += f" · rejected {self.staging_rejected:,} (no account)"
        if self.behind:
            line += (
                f" · CANNOT HOLD {self.asked_rate:,.0f} rows/s: {self.lag_s:,.1f} s behind schedule "
                "(the database or this machine is the limit)"
            )
        return line


def database_state(conn) -> dict:
    """What the simulator needs from the database: the id ranges in use and e-mails to repeat."""
    if conn.execute("SELECT to_regclass('financial_transactions_staging') IS NULL").fetchone()[0]:
        raise OpsError("This database has no platform schema yet: run `opsconsole db migrate` first.")

    def scalar(query) -> int:
        row = conn.execute(query).fetchone()
        return int(row[0] or 0) if row else 0

    txn_max = scalar(
        "SELECT greatest((SELECT max(transaction_id) FROM financial_transactions),"
        " (SELECT max(transaction_id) FROM financial_transactions_staging),"
        " (SELECT max(transaction_id) FROM financial_transactions_processed))"
    )
    pool_rows = conn.execute(
        "SELECT customer_id, first_name, last_name, email FROM crm_customers "
        "WHERE email IS NOT NULL AND first_name IS NOT NULL AND last_name IS NOT NULL "
        "ORDER BY customer_id DESC LIMIT 5000"
    ).fetchall()
    pool = pl.DataFrame(
        pool_rows,
        schema={"customer_id": pl.Int64, "first_name": pl.String, "last_name": pl.String, "email": pl.String},
        orient="row",
    )
    return {
        "transaction_id_max": txn_max,
        "customer_id_max": scalar("SELECT max(customer_id) FROM crm_customers"),
        "order_id_max": scalar("SELECT max(order_id) FROM erp_order_keys"),
        "email_pool": pool,
    }


def configure(base: SimConfig, state: dict, start_us: int) -> SimConfig:
    """The run's config: ids continue after what the database holds, time starts now."""
    return replace(
        base,
        start_us=start_us,
        transaction_id_base=state["transaction_id_max"] + 1,
        customer_id_max=state["customer_id_max"],
        order_id_max=state["order_id_max"],
        new_customer_base=state["customer_id_max"] + 1,
        email_pool=state["email_pool"],
    )


def _load_batch(conn, frames: TickFrames, streams: set[str], xid: list[str] | None = None) -> None:
    """One transaction per batch: COPY staging/events/market, CRM updates and sign-ups, NOTIFY.

    The transaction's id goes into ``xid`` first, so that after losing the connection during the
    commit the runner can ask the server whether the batch committed (pg_xact_status)."""
    from opsconsole.pipeline.copyio import copy_frames

    with conn.transaction(), conn.cursor() as cur:
        if xid is not None:
            xid[:] = [cur.execute("SELECT pg_current_xact_id()::text").fetchone()[0]]
        if "staging" in streams and frames.staging.height:
            # (a transaction without an account is rejected, not staged: arrival.load)
            arrival.load(cur, frames.staging, "simulate", batch_id=frames.staging["batch_id"][-1])
        if "events" in streams and frames.events.height:
            named, anonymous = synth.split_events(frames.events)
            if named.height:
                copy_frames(cur, "ecommerce_events", EVENT_COLUMNS, [named], prefetch=False)
            if anonymous.height:
                copy_frames(
                    cur,
                    synth.ANONYMOUS_EVENTS,
                    synth.anonymous_columns(EVENT_COLUMNS),
                    [anonymous],
                    prefetch=False,
                )
        if "market" in streams and frames.market.height:
            copy_frames(cur, "external_market_data", MARKET_COLUMNS, [frames.market], prefetch=False)
        if "crm" in streams and frames.crm_updates.height:
            u = frames.crm_updates
            cur.execute(
                """
                UPDATE crm_customers c
                SET phone = u.phone, address = u.address::jsonb, updated_at = u.updated_at
                FROM (SELECT DISTINCT ON (customer_id) *
                      FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::timestamptz[])
                           AS x(customer_id, phone, address, updated_at)) u
                WHERE c.customer_id = u.customer_id
                """,
                (
                    u["customer_id"].to_list(),
                    u["phone"].to_list(),
                    u["address"].to_list(),
                    u["updated_at"].to_list(),
                ),
            )
        if "crm" in streams and frames.crm_new.height:
            n = frames.crm_new
            cur.execute(
                """
                INSERT INTO crm_customers (customer_id, customer_uuid, first_name, last_name, email, phone,
                                           address, created_at, updated_at, source_system)
                SELECT customer_id, customer_uuid, first_name, last_name, email, phone, address::jsonb,
                       created_at, updated_at, source_system
                FROM unnest(%s::bigint[], %s::uuid[], %s::text[], %s::text[], %s::text[], %s::text[],
                            %s::text[], %s::timestamptz[], %s::timestamptz[], %s::text[])
                     AS x(customer_id, customer_uuid, first_name, last_name, email, phone, address,
                          created_at, updated_at, source_system)
                ON CONFLICT DO NOTHING
                """,
                [n[c].to_list() for c in CRM_NEW_COLUMNS],
            )


def run(
    dsn: str,
    base: SimConfig,
    *,
    duration: float | None = None,
    on_status=None,
    stop: threading.Event | None = None,
    status_every: float = 0.5,
    on_outage=None,
) -> SimStats:
    """Feed the database until ``duration`` seconds passed, ``stop`` is set or Ctrl-C.

    Losing the server (restart, failover, pg_terminate_backend) does not end the run: ``on_outage``
    gets one line when it starts and one when the database is back (opsconsole.db.connect.Reconnect,
    jittered backoff). The batch in flight is sent exactly once: after reconnecting the runner asks
    the server whether its transaction committed and sends it again only if it did not. The ticks
    that fell due during the outage are NOT generated (their transaction ids stay unused): the
    schedule resumes at the asked rate from the moment the database is back, with no catch-up burst.
    """
    from opsconsole.db.connect import Reconnect, connect

    stop = stop or threading.Event()
    base.faults.validate()
    say = on_outage or (lambda line: None)
    policy = Reconnect("simulate", say)
    conn = connect(dsn, "simulate")
    try:
        state = database_state(conn)
        stats = SimStats(asked_rate=base.rate)
        streams = {"staging", "events", "crm", "market"}
        cfg = configure(base, state, int(time.time() * US))
        dt = cfg.tick_seconds
        last_tick_end = math.ceil(duration / dt) if duration else None
        t0 = time.monotonic()
        stats.started = t0
        next_status = t0
        tick = 0
        try:
            while not stop.is_set():
                now = time.monotonic()
                elapsed = now - t0
                if last_tick_end is not None and (tick >= last_tick_end or elapsed >= duration + dt):
                    break  # all ticks sent, or time is up (a run that fell behind stops anyway)
                due = math.floor(elapsed / dt)
                if tick > due:
                    stop.wait(min((tick * dt) - elapsed, 0.25))
                    continue
                last = min(due, tick + MAX_CATCHUP_TICKS - 1)
                if last_tick_end is not None:
                    last = min(last, last_tick_end - 1)
                frames = generate_ticks(cfg, tick, last + 1)
                conn, outage_s = _send_once(dsn, conn, frames, streams, policy, stop)
                if conn is None:
                    break  # stopped while the database was away; the batch was not sent
                _count(stats, frames, streams)
                tick = last + 1
                now = time.monotonic()
                if outage_s:
                    # Resume at the asked rate from now: ticks due during the outage are skipped.
                    stats.outages = policy.outages
                    stats.outage_s += outage_s
                    resume = math.floor((now - t0) / dt)
                    if resume > tick:
                        stats.skipped_ticks += resume - tick
                        tick = resume
                # Time covered: the schedule's (tick * dt) when on time, the clock's when behind.
                stats.elapsed_s = max(now - t0, tick * dt)
                stats.lag_s = max(0.0, stats.elapsed_s - tick * dt)
                stats.max_lag_s = max(stats.max_lag_s, stats.lag_s)
                stats._window.append((now, stats.staging_rows + stats.staging_rejected))
                while stats._window and now - stats._window[0][0] > RATE_WINDOW_S:
                    stats._window.popleft()
                if len(stats._window) > 1 and stats._window[-1][0] > stats._window[0][0]:
                    (ta, ra), (tb, rb) = stats._window[0], stats._window[-1]
                    stats.window_rate = (rb - ra) / (tb - ta)
                else:
                    stats.window_rate = stats.achieved_rate
                if on_status is not None and now >= next_status:
                    on_status(stats)
                    next_status = now + status_every
        except KeyboardInterrupt:
            pass
        stats.elapsed_s = max(time.monotonic() - t0, tick * dt)
        stats.outages = policy.outages
        conn = _audit_run(dsn, conn, base, duration, stats, policy, say)
        policy.settle()
    finally:
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
    if on_status is not None:
        on_status(stats)
    return stats


def _send_once(dsn: str, conn, frames: TickFrames, streams: set[str], policy, stop: threading.Event):
    """Load one batch, riding out a lost connection; returns (connection, seconds spent reconnecting).

    The connection is None when ``stop`` was set before the database came back."""
    from opsconsole.errors import is_transient

    xid: list[str] = []
    started: float | None = None
    while True:
        try:
            if conn is None:
                conn = _reconnect(dsn)
                if xid and _committed(conn, xid[0]):
                    policy.restored()
                    break  # the commit reached the server; only its acknowledgement was lost
            _load_batch(conn, frames, streams, xid)
            policy.restored()  # back once a batch lands: on Citus the link may be up, a node not
            break
        except Exception as exc:
            if not is_transient(exc):
                raise
            if started is None:
                started = time.monotonic()
            with contextlib.suppress(Exception):
                conn.close()
            conn = None
            if policy.pause(policy.lost(exc), stop):
                return None, time.monotonic() - started
    return conn, (time.monotonic() - started if started is not None else 0.0)


def _reconnect(dsn: str):
    from opsconsole.db.connect import connect

    return connect(dsn, "simulate")


def _committed(conn, xid: str) -> bool:
    """Did the transaction ``xid`` commit? Unknown (too old, or lost in a failover) counts as no."""
    import psycopg

    try:
        row = conn.execute("SELECT pg_xact_status(%s::xid8)", (xid,)).fetchone()
    except psycopg.errors.DatabaseError:
        return False  # e.g. 'transaction ID is in the future' on a promoted standby that lacks it
    return bool(row) and row[0] == "committed"


def _audit_run(dsn: str, conn, base: SimConfig, duration, stats: SimStats, policy, say):
    """The run's audit row, riding out a lost connection for up to AUDIT_PATIENCE_S."""
    from opsconsole.errors import is_transient

    deadline = time.monotonic() + AUDIT_PATIENCE_S
    while True:
        try:
            if conn is None:
                conn = _reconnect(dsn)
            conn.execute(
                "SELECT record_audit('simulate', %s::jsonb, %s::jsonb, 'ok', %s::numeric, NULL)",
                (
                    json.dumps({"rate": base.rate, "duration": duration, "faults": base.faults.__dict__}),
                    json.dumps(stats.as_dict()),
                    round(stats.elapsed_s * 1000, 3),
                ),
            )
            policy.restored()
            return conn
        except Exception as exc:
            if not is_transient(exc):
                raise
            with contextlib.suppress(Exception):
                conn.close()
            conn = None
            wait = policy.lost(exc)
            if time.monotonic() + wait > deadline:
                say(f"simulate: the database did not come back; the run's audit row was not written ({exc})")
                return None
            time.sleep(wait)


def _count(stats: SimStats, frames: TickFrames, streams: set[str]) -> None:
    stats.batches += 1
    stats.ticks += frames.last_tick - frames.first_tick + 1
    if "staging" in streams:
        aside = frames.staging.filter(arrival.WITHOUT_ACCOUNT).height
        stats.staging_rows += frames.staging.height - aside
        stats.staging_rejected += aside
        for kind, n in frames.staging.group_by("_fault").len().iter_rows():
            if kind is not None:
                stats.faults[kind] += n
    stats.event_rows += frames.events.height
    for kind, n in frames.events.group_by("_fault").len().iter_rows():
        if kind is not None:
            stats.event_faults[kind] += n
    stats.crm_updates += frames.crm_updates.height
    stats.crm_new += frames.crm_new.height
    stats.faults["cross_system_dup"] += int(frames.crm_new["_fault"].is_not_null().sum())
    stats.market_rows += frames.market.height
