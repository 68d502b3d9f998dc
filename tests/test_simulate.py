"""`opsconsole simulate`: the generator is a pure function of (config, tick) whose faults come at
their configured rates and look like what they claim to be; the runner holds a modest rate against
a real database and says plainly when it cannot."""

from __future__ import annotations

import json
import math
import threading
from dataclasses import replace

import polars as pl
import psycopg
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from opsconsole.cli import main
from opsconsole.datagen import simulate
from opsconsole.datagen.simulate import FaultRates, SimConfig, generate_tick, generate_ticks

START_US = 1_780_000_000 * 1_000_000
RATES = FaultRates(
    invalid=0.05, duplicate=0.03, conflict=0.02, late=0.04, out_of_order=0.03, cross_system_dup=0.1
)
POOL = pl.DataFrame(
    {
        "customer_id": [1, 2, 3, 4],
        "first_name": ["Ada", "Alan", "Grace", "Edsger"],
        "last_name": ["Lovelace", "Turing", "Hopper", "Dijkstra"],
        "email": ["ada@example.com", "alan@example.com", "grace@example.com", "edsger@example.com"],
    }
)


def config(**kw) -> SimConfig:
    base = {
        "seed": 11,
        "rate": 2000.0,
        "tick_seconds": 0.5,
        "events_rate": 400.0,
        "market_rate": 16.0,
        "crm_burst_every": 2.0,
        "crm_burst_updates": 20,
        "crm_burst_new": 200,
        "faults": RATES,
        "start_us": START_US,
        "transaction_id_base": 1_000_000,
        "customer_id_max": 500,
        "order_id_max": 3000,
        "new_customer_base": 501,
        "email_pool": POOL,
    }
    base.update(kw)
    return SimConfig(**base)


@pytest.fixture(scope="module")
def frames() -> simulate.TickFrames:
    return generate_ticks(config(), 0, 40)  # 40,000 staging rows, 8,000 events, 2,000 sign-ups


def within(observed: int, n: int, p: float) -> bool:
    """Observed count within 4.5 binomial standard deviations of n * p."""
    return abs(observed - n * p) <= 4.5 * math.sqrt(n * p * (1 - p)) + 1


def test_staging_faults_come_at_their_rates(frames: simulate.TickFrames) -> None:
    staging = frames.staging
    n = staging.height
    assert n == 40_000
    counts = dict(staging.group_by("_fault").len().iter_rows())
    for kind in simulate.FAULT_KINDS:
        assert within(counts.get(kind, 0), n, getattr(RATES, kind)), (kind, counts.get(kind), n)
    invalid = staging.filter(pl.col("_fault") == "invalid")
    kinds = dict(invalid.group_by("_invalid").len().iter_rows())
    assert set(kinds) == set(simulate.INVALID_KINDS)


def test_each_fault_is_what_it_claims(frames: simulate.TickFrames) -> None:
    s = frames.staging.with_columns(ts=pl.col("transaction_timestamp").dt.epoch("us"))
    known = list(simulate.TYPE_WEIGHTS)
    clean = s.filter(pl.col("_fault").is_null())
    assert (
        clean.filter(
            pl.col("transaction_id").is_null()
            | pl.col("account_id").is_null()
            | pl.col("amount").is_null()
            | ~pl.col("transaction_type").is_in(known)
            | (pl.col("amount").abs() >= 1e12)
            | (pl.col("ts") != pl.col("_scheduled_us"))
        ).height
        == 0
    )
    # Clean rows arrive in event-time order.
    assert clean["ts"].is_sorted()

    inv = s.filter(pl.col("_fault") == "invalid")
    defects = {
        "null_transaction_id": pl.col("transaction_id").is_null(),
        "null_account_id": pl.col("account_id").is_null(),
        "null_amount": pl.col("amount").is_null(),
        "unknown_type": ~pl.col("transaction_type").is_in(known),
        "absurd_amount": pl.col("amount").abs() >= 1e12,
        "future_timestamp": pl.col("ts") >= pl.col("_scheduled_us") + 3600 * 1_000_000,
    }
    for kind, has_defect in defects.items():
        rows = inv.filter(pl.col("_invalid") == kind)
        assert rows.height > 0 and rows.filter(~has_defect).height == 0, kind

    payload = [
        "transaction_id",
        "account_id",
        "transaction_timestamp",
        "amount",
        "transaction_type",
        "reference_data",
    ]
    by_g = s.select("_g", *payload)
    dups = s.filter(pl.col("_fault") == "duplicate").join(
        by_g, left_on="_source_g", right_on="_g", suffix="_src"
    )
    assert dups.height == s.filter(pl.col("_fault") == "duplicate").height
    for col in payload:
        assert (dups[col] == dups[f"{col}_src"]).all(), col  # an exact copy of an earlier row
    assert (dups["_source_g"] < dups["_g"]).all()
    assert dups.join(clean.select("_g"), left_on="_source_g", right_on="_g").height == dups.height

    conflicts = s.filter(pl.col("_fault") == "conflict").join(
        by_g, left_on="_source_g", right_on="_g", suffix="_src"
    )
    assert conflicts.height > 0
    assert (conflicts["transaction_id"] == conflicts["transaction_id_src"]).all()
    assert (conflicts["amount"] != conflicts["amount_src"]).all()
    assert (conflicts["_source_g"] < conflicts["_g"]).all()

    late = s.filter(pl.col("_fault") == "late").with_columns(
        age=(pl.col("_scheduled_us") - pl.col("ts")) / 1e6
    )
    assert late["age"].min() >= 120 and late["age"].max() <= 6 * 3600

    ordered = s.sort("_g").with_columns(newest_before=pl.col("ts").cum_max().shift(1))
    ooo = ordered.filter(pl.col("_fault") == "out_of_order").with_columns(
        age=(pl.col("_scheduled_us") - pl.col("ts")) / 1e6
    )
    assert (ooo["ts"] < ooo["newest_before"]).all()  # older than rows that arrived before it
    assert ooo["age"].min() >= 1 and ooo["age"].max() <= 61


def test_event_faults_and_shape(frames: simulate.TickFrames) -> None:
    ev = frames.events.with_columns(ts=pl.col("event_timestamp").dt.epoch("us"))
    n = ev.height
    assert n == 8000
    counts = dict(ev.group_by("_fault").len().iter_rows())
    assert within(counts.get("late", 0), n, RATES.late)
    assert within(counts.get("out_of_order", 0), n, RATES.out_of_order)
    late = ev.filter(pl.col("_fault") == "late")
    assert ((late["_scheduled_us"] - late["ts"]) >= 120 * 1_000_000).all()
    assert set(ev["event_type"].unique()) == {"page_view", "product_view", "add_to_cart", "purchase"}
    categories = ev.select(pl.col("event_data").str.json_path_match("$.category"))["event_data"]
    assert categories.null_count() == 0
    products = ev.filter(pl.col("event_type") != "page_view").select(
        pl.col("event_data").str.json_path_match("$.product.name")
    )["event_data"]
    assert products.null_count() == 0


def test_cross_system_duplicates_are_the_same_person_with_another_spelling(
    frames: simulate.TickFrames,
) -> None:
    new = frames.crm_new
    n = new.height
    assert n == 10 * 200
    dups = new.filter(pl.col("_fault") == "cross_system_dup")
    assert within(dups.height, n, RATES.cross_system_dup)
    assert (dups["email"].str.strip_chars(" ").str.to_lowercase() == dups["_dup_of_email"]).all()
    assert (dups["email"] != dups["_dup_of_email"]).all()
    src = dups.join(POOL, left_on="_dup_of_id", right_on="customer_id", suffix="_pool")
    assert (src["first_name"] == src["first_name_pool"]).all() and (
        src["last_name"] == src["last_name_pool"]
    ).all()
    assert set(dups["source_system"].unique()) <= {"ecommerce", "erp"}
    assert new["customer_id"].is_unique().all() and new["customer_id"].min() == 501


def test_generator_is_a_pure_function_of_seed_and_tick() -> None:
    cfg = config()
    a, b = generate_tick(cfg, 7), generate_tick(cfg, 7)
    for name in ("staging", "events", "crm_updates", "crm_new", "market"):
        assert getattr(a, name).equals(getattr(b, name)), name
    other = generate_tick(replace(cfg, seed=12), 7)
    assert not other.staging.equals(a.staging)
    merged = generate_ticks(cfg, 3, 9)
    parts = [generate_tick(cfg, t) for t in range(3, 9)]
    for name in ("staging", "events", "crm_new", "market"):
        assert merged.__dict__[name].equals(
            pl.concat([p.__dict__[name] for p in parts], how="vertical_relaxed")
        )


@settings(max_examples=20, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=5000),
    tick=st.sampled_from([0.05, 0.1, 0.2, 0.5, 1.0]),
    first=st.integers(min_value=0, max_value=500),
    ticks=st.integers(min_value=1, max_value=6),
    shares=st.lists(st.floats(min_value=0, max_value=0.12), min_size=5, max_size=5),
)
def test_row_counts_are_exact_and_labels_match_payloads(
    rate: float, tick: float, first: int, ticks: int, shares: list[float]
) -> None:
    faults = FaultRates(*shares)
    cfg = config(rate=rate, tick_seconds=tick, faults=faults, events_rate=50.0)
    out = generate_ticks(cfg, first, first + ticks)
    per_tick = rate * tick
    expected = math.floor((first + ticks) * per_tick + 1e-9) - math.floor(first * per_tick + 1e-9)
    assert out.staging.height == expected
    s = out.staging
    if s.height:
        assert s["_g"].is_sorted() and s["_g"].is_unique().all()
        not_invalid = s.filter(pl.col("_fault").is_null() | (pl.col("_fault") != "invalid"))
        assert not_invalid["transaction_id"].null_count() == 0 and not_invalid["amount"].null_count() == 0
        assert set(s["batch_id"].unique()) <= {f"sim-{t}" for t in range(first, first + ticks)}
        for kind in simulate.FAULT_KINDS:
            if getattr(faults, kind) == 0:
                assert s.filter(pl.col("_fault") == kind).height == 0


def test_stats_say_plainly_when_the_rate_is_not_held() -> None:
    ok = simulate.SimStats(asked_rate=1000)
    ok.elapsed_s, ok.staging_rows, ok.lag_s = 10.0, 10_000, 0.0
    assert ok.held and "CANNOT HOLD" not in ok.describe()
    slow = simulate.SimStats(asked_rate=1000)
    slow.elapsed_s, slow.staging_rows, slow.lag_s = 10.0, 6_000, 4.0
    assert not slow.held
    assert "CANNOT HOLD 1,000 rows/s: 4.0 s behind" in slow.describe()


# ------------------------------------------------------------------------------------------------
# Against the database
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def seeded_db(db_dsn: str, conn: psycopg.Connection) -> str:
    from datetime import UTC, datetime

    from opsconsole.datagen import seed as seeding

    seeding.seed(db_dsn, seeding.SeedPlan(customers=50, seed=1, as_of=datetime(2026, 6, 1, tzinfo=UTC)))
    return db_dsn


def test_a_short_run_inserts_at_the_asked_rate(seeded_db: str, conn: psycopg.Connection) -> None:
    before = conn.execute(
        "SELECT (SELECT count(*) FROM financial_transactions_staging) AS staging, "
        "(SELECT count(*) FROM ecommerce_events)"
        " + (SELECT count(*) FROM ecommerce_anonymous_events) AS events, "
        "(SELECT count(*) FROM crm_customers) AS customers, "
        "(SELECT max(transaction_id) FROM financial_transactions_staging) AS max_txn"
    ).fetchone()
    cfg = SimConfig(seed=5, rate=300.0, tick_seconds=0.1, events_rate=50.0, crm_burst_every=1.0, faults=RATES)
    seen = []
    stats = simulate.run(seeded_db, cfg, duration=3.0, on_status=lambda s: seen.append(s.staging_rows))
    after = conn.execute(
        "SELECT (SELECT count(*) FROM financial_transactions_staging) AS staging, "
        "(SELECT count(*) FROM ecommerce_events)"
        " + (SELECT count(*) FROM ecommerce_anonymous_events) AS events, "
        "(SELECT count(*) FROM crm_customers) AS customers, "
        "(SELECT min(transaction_id) FROM financial_transactions_staging "
        "WHERE batch_id LIKE 'sim-%%') AS min_txn"
    ).fetchone()
    staged = after["staging"] - before["staging"]
    assert staged == stats.staging_rows
    assert 0.9 * 900 <= staged <= 900  # 300 rows/s for 3 s
    assert stats.achieved_rate == pytest.approx(300, rel=0.12)
    assert after["events"] - before["events"] == stats.event_rows
    assert 0.9 * 150 <= stats.event_rows <= 150
    assert after["customers"] - before["customers"] == stats.crm_new == 30  # bursts at 0, 1, 2 s
    assert after["min_txn"] > before["max_txn"]  # ids continue after what was there
    assert seen, "the status callback was called"
    statuses = {
        r["processing_status"]: r["n"]
        for r in conn.execute(
            "SELECT processing_status, count(*) AS n FROM financial_transactions_staging "
            "WHERE batch_id LIKE 'sim-%%' GROUP BY 1"
        )
    }
    assert sum(statuses.values()) == staged
    audit = conn.execute(
        "SELECT arguments, result FROM ops_audit_log WHERE action = 'simulate' ORDER BY audit_id DESC LIMIT 1"
    ).fetchone()
    assert audit["arguments"]["rate"] == 300.0 and audit["result"]["staging_rows"] == staged


def test_a_run_that_cannot_keep_up_says_so(seeded_db: str, conn: psycopg.Connection) -> None:
    # Every COPY into staging costs 0.3 s while a batch covers at most 25 ticks of 0.01 s: the
    # runner falls behind whatever it does, and must say so rather than pretend.
    conn.execute(
        "CREATE FUNCTION slow_down() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public "
        "AS $$ BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$"
    )
    conn.execute(
        "CREATE TRIGGER slow AFTER INSERT ON financial_transactions_staging "
        "FOR EACH STATEMENT EXECUTE FUNCTION slow_down()"
    )
    cfg = SimConfig(seed=5, rate=200.0, tick_seconds=0.01, events_rate=0, market_rate=0, faults=FaultRates())
    stats = simulate.run(seeded_db, cfg, duration=1.5)
    assert not stats.held
    assert stats.max_lag_s > 0.5
    assert stats.achieved_rate < 0.95 * 200


def test_stop_event_ends_a_run_without_duration(seeded_db: str) -> None:
    stop = threading.Event()
    timer = threading.Timer(1.0, stop.set)
    timer.start()
    stats = simulate.run(seeded_db, SimConfig(seed=1, rate=100.0, faults=FaultRates()), stop=stop)
    timer.cancel()
    assert 0.8 <= stats.elapsed_s <= 3.0 and stats.staging_rows > 0


def test_cli_simulate_json_and_bad_rates(db_dsn: str) -> None:
    result = CliRunner().invoke(
        main, ["--dsn", db_dsn, "simulate", "--rate", "100", "--duration", "1", "--seed", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["staging_rows"] > 0 and report["event_rows"] > 0
    bad = CliRunner().invoke(
        main, ["--dsn", db_dsn, "simulate", "--invalid-rate", "0.7", "--late-rate", "0.6"]
    )
    assert bad.exit_code == 2 and "add up to" in bad.output


def test_simulate_on_an_unmigrated_database_gets_one_sentence(empty_db_dsn: str) -> None:
    result = CliRunner().invoke(main, ["--dsn", empty_db_dsn, "simulate", "--rate", "100", "--duration", "1"])
    said = " ".join(result.output.split())  # the message wraps at the terminal's width
    assert result.exit_code != 0 and "run `opsconsole db migrate` first" in said
    assert "Traceback" not in said
