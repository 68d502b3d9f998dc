"""Customer 360: the row definition, change capture, the incremental refresh, read-time fields, search.

Every test loads a small known dataset and asserts exact values. "today" is the database's
customer_360_today() (a UTC calendar date), so the day arithmetic is exact whatever the clock.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from tests.orders import add_orders

UTC = dt.UTC


def today(conn) -> dt.date:
    return conn.execute("SELECT customer_360_today() AS d").fetchone()["d"]


def utc_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=UTC)


def add_customer(conn, cid, first="Ann", last="Smith", email=None, phone=None, created_at=None, **extra):
    cols = {
        "customer_id": cid,
        "first_name": first,
        "last_name": last,
        "email": email,
        "phone": phone,
        **extra,
    }
    if created_at is not None:
        cols["created_at"] = created_at
    names = ", ".join(cols)
    marks = ", ".join(["%s"] * len(cols))
    conn.execute(f"INSERT INTO crm_customers ({names}) VALUES ({marks})", list(cols.values()))


def add_order(conn, oid, cid, day, amount, currency="USD", status="shipped", number=None):
    add_orders(
        conn,
        {
            "order_id": oid,
            "customer_id": cid,
            "order_number": number or f"SO-{oid}",
            "order_date": day,
            "total_amount": amount,
            "currency_code": currency,
            "status": status,
        },
    )


def add_event(conn, cid, ts, etype="page_view", category=None, ua="Mozilla/5.0 (X11)", session=None):
    data = json.dumps({"category": category}) if category else None
    conn.execute(
        "INSERT INTO ecommerce_events (session_id, customer_id, event_timestamp, event_type, event_data,"
        " user_agent) VALUES (%s, %s, %s, %s, %s, %s)",
        (session, cid, ts, etype, data, ua),
    )


def add_txn(conn, tid, account, ts, amount, ref, ttype="payment", processed=True):
    conn.execute(
        "INSERT INTO financial_transactions (transaction_id, account_id, transaction_timestamp, amount,"
        " transaction_type, reference_data, is_processed) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (tid, account, ts, amount, ttype, json.dumps(ref) if ref is not None else None, processed),
    )


def refresh(conn, full=False) -> dict:
    fn = "refresh_customer_360_full" if full else "refresh_customer_360_incremental"
    return conn.execute(f"SELECT * FROM {fn}()").fetchone()


def row(conn, cid) -> dict | None:
    return conn.execute("SELECT * FROM customer_360_mv WHERE customer_id = %s", (cid,)).fetchone()


# -------------------------------------------------------------------------------------------------
# The definition
# -------------------------------------------------------------------------------------------------


def test_two_accounts_give_one_row_and_the_join_uses_order_id(conn):
    now = dt.datetime.now(UTC)
    d0 = today(conn)
    add_customer(conn, 1, email="ann@example.com")
    add_customer(conn, 2, first="Bob", last="Other")
    # order_number deliberately looks like another order's id: the spec joined on order_number.
    add_order(conn, 100, 1, d0 - dt.timedelta(days=3), 600, number="200")
    add_order(conn, 200, 2, d0 - dt.timedelta(days=3), 50, number="SO-200")
    add_txn(conn, 1, 10, now - dt.timedelta(hours=5), 400, {"order_id": 100})  # account 10
    add_txn(conn, 2, 11, now - dt.timedelta(hours=4), 200, {"order_id": "100"})  # account 11, text id
    add_txn(conn, 3, 11, now - dt.timedelta(hours=3), -50, {"order_id": 100}, ttype="refund")
    add_txn(conn, 4, 11, now - dt.timedelta(hours=2), 999, {"order_id": 100}, processed=False)
    add_txn(conn, 5, 12, now - dt.timedelta(hours=1), 70, {"order_id": 200})  # customer 2's order
    add_txn(conn, 6, 12, now - dt.timedelta(days=400), 80, {"order_id": 100})  # outside the year

    result = refresh(conn)
    assert (result["rows_processed"], result["rows_upserted"], result["rows_deleted"]) == (2, 2, 0)

    rows = conn.execute("SELECT * FROM customer_360_mv WHERE customer_id = 1").fetchall()
    assert len(rows) == 1
    r = rows[0]
    assert r["transaction_count"] == 3
    assert r["total_transaction_amount"] == Decimal("550")
    assert r["financial_account_ids"] == [10, 11]
    assert r["payment_count"] == 2 and r["refund_count"] == 1
    assert r["risk_indicator"] == pytest.approx(1 / 3)
    assert round(r["avg_transaction_amount"], 4) == Decimal("183.3333")
    assert (
        r["last_financial_activity"]
        == conn.execute(
            "SELECT transaction_timestamp FROM financial_transactions WHERE transaction_id = 3"
        ).fetchone()["transaction_timestamp"]
    )
    r2 = row(conn, 2)
    assert (r2["transaction_count"], r2["total_transaction_amount"], r2["financial_account_ids"]) == (
        1,
        Decimal("70"),
        [12],
    )
    assert conn.execute("SELECT count(*) AS n FROM customer_360_mv").fetchone()["n"] == 2


def test_no_orders_is_not_churned(conn):
    add_customer(conn, 1)
    refresh(conn)
    r = row(conn, 1)
    assert r["activity_segment"] == "No Orders"
    assert r["value_segment"] == "Prospect"
    assert r["total_orders"] == 0 and r["total_lifetime_value"] == 0
    assert r["days_since_last_order"] is None
    assert (r["orders_30d"], r["orders_90d"]) == (0, 0)
    assert r["transaction_count"] == 0 and r["risk_indicator"] == 0


def test_day_arithmetic_segments_and_windows(conn):
    d0 = today(conn)
    # Signed up 10 calendar days ago at 23:00 UTC: the spec's interval arithmetic said 9.
    add_customer(conn, 1, created_at=utc_midnight(d0 - dt.timedelta(days=10)) + dt.timedelta(hours=23))
    for i, age in enumerate([0, 30, 31, 90, 91]):
        add_order(conn, 10 + i, 1, d0 - dt.timedelta(days=age), 100)
    # One customer per activity boundary.
    cases = {2: 30, 3: 31, 4: 90, 5: 91, 6: 180, 7: 181}
    for cid, age in cases.items():
        add_customer(conn, cid, created_at=utc_midnight(d0))
        add_order(conn, 100 + cid, cid, d0 - dt.timedelta(days=age), 20)
    refresh(conn)

    r = row(conn, 1)
    assert r["customer_age_days"] == 10
    assert (r["orders_30d"], r["orders_90d"]) == (2, 4)
    assert r["days_since_last_order"] == 0
    assert r["first_order_date"] == d0 - dt.timedelta(days=91)
    assert r["activity_segment"] == "Active"
    assert isinstance(r["customer_age_days"], int)

    got = {
        x["customer_id"]: (x["days_since_last_order"], x["activity_segment"], x["customer_age_days"])
        for x in conn.execute(
            "SELECT * FROM customer_360_mv WHERE customer_id BETWEEN 2 AND 7 ORDER BY customer_id"
        ).fetchall()
    }
    assert got == {
        2: (30, "Active", 0),
        3: (31, "At Risk", 0),
        4: (90, "At Risk", 0),
        5: (91, "Dormant", 0),
        6: (180, "Dormant", 0),
        7: (181, "Churned", 0),
    }

    # The reader's TimeZone does not move any number (days are UTC calendar days).
    for tz in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):
        conn.execute(f"SET TimeZone = '{tz}'")
        r = row(conn, 1)
        assert (r["customer_age_days"], r["orders_30d"], r["orders_90d"]) == (10, 2, 4)
    conn.execute("RESET TimeZone")


def test_relative_fields_follow_the_clock_without_a_refresh(conn):
    """Aging the stored facts by N days is what N days of clock do to them: the view follows at once."""
    d0 = today(conn)
    add_customer(conn, 1, created_at=utc_midnight(d0 - dt.timedelta(days=5)))
    add_order(conn, 1, 1, d0 - dt.timedelta(days=25), 100)
    add_order(conn, 2, 1, d0 - dt.timedelta(days=85), 100)
    refresh(conn)
    r = row(conn, 1)
    assert (r["orders_30d"], r["orders_90d"], r["activity_segment"], r["days_since_last_order"]) == (
        2 - 1,
        2,
        "Active",
        25,
    )
    stamp = r["last_updated"]

    conn.execute(
        """UPDATE customer_360_store SET
               customer_since = customer_since - interval '10 days',
               first_order_date = first_order_date - 10, last_order_date = last_order_date - 10,
               recent_order_dates = ARRAY(SELECT d - 10 FROM unnest(recent_order_dates) d)"""
    )
    r = row(conn, 1)
    assert (r["orders_30d"], r["orders_90d"], r["activity_segment"], r["days_since_last_order"]) == (
        0,
        1,
        "At Risk",
        35,
    )
    assert r["customer_age_days"] == 15
    assert r["last_updated"] == stamp


def test_cancelled_orders_left_out_null_status_counted(conn):
    d0 = today(conn)
    add_customer(conn, 1)
    add_order(conn, 1, 1, d0, 100, status="shipped")
    add_order(conn, 2, 1, d0, 200, status=None)
    add_order(conn, 3, 1, d0, 5000, status="CANCELLED")
    refresh(conn)
    r = row(conn, 1)
    assert (r["total_orders"], r["total_lifetime_value"], r["value_segment"]) == (
        2,
        Decimal("300"),
        "Low Value",
    )


def test_mode_ties_break_by_recency_then_byte_order(conn):
    d0 = today(conn)
    now = dt.datetime.now(UTC)
    add_customer(conn, 1)
    # Two USD, two EUR: the EUR order is the most recent one, so EUR wins the tie.
    add_order(conn, 1, 1, d0 - dt.timedelta(days=9), 10, "USD")
    add_order(conn, 2, 1, d0 - dt.timedelta(days=8), 10, "USD")
    add_order(conn, 3, 1, d0 - dt.timedelta(days=9), 10, "EUR")
    add_order(conn, 4, 1, d0 - dt.timedelta(days=1), 10, "EUR")
    add_customer(conn, 2)
    # Same counts, same latest day: byte order decides (GBP < USD).
    add_order(conn, 5, 2, d0, 10, "USD")
    add_order(conn, 6, 2, d0, 10, "GBP")
    # Categories: shoes x2, hats x2, hats more recent. Devices: a tie at the same instant -> desktop.
    t = now - dt.timedelta(hours=1)
    add_event(conn, 1, t - dt.timedelta(hours=5), category="shoes", ua="Phone Mobile Safari")
    add_event(conn, 1, t - dt.timedelta(hours=4), category="shoes", ua=None)
    add_event(conn, 1, t - dt.timedelta(hours=3), category="hats", ua=None)
    add_event(conn, 1, t, category="hats", ua="Linux X11")
    refresh(conn)
    r1, r2 = row(conn, 1), row(conn, 2)
    assert r1["primary_currency"] == "EUR"
    assert r2["primary_currency"] == "GBP"
    assert r1["favorite_category"] == "hats"
    # mobile once (older), desktop once (newer), two events without a user agent are ignored.
    assert r1["preferred_device"] == "desktop"
    assert r1["currencies_used"] == 2


def test_engagement_metrics_and_window(conn):
    now = dt.datetime.now(UTC)
    add_customer(conn, 1)
    s1, s2 = "00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"
    add_event(conn, 1, now - dt.timedelta(days=2), "page_view", session=s1)
    add_event(conn, 1, now - dt.timedelta(days=2), "product_view", session=s1)
    add_event(conn, 1, now - dt.timedelta(days=1), "add_to_cart", session=s2)
    add_event(conn, 1, now - dt.timedelta(days=1), "purchase", session=s2)
    add_event(conn, 1, now - dt.timedelta(days=380), "purchase", session=s2)  # outside the year
    conn.execute(  # an anonymous visitor's event counts for nobody
        "INSERT INTO ecommerce_anonymous_events (session_id, event_timestamp, event_type)"
        " VALUES ('00000000-0000-0000-0000-000000000003', now(), 'page_view')"
    )
    refresh(conn)
    r = row(conn, 1)
    assert (r["total_events"], r["total_sessions"], r["page_views"], r["product_views"]) == (4, 2, 1, 1)
    assert (r["cart_additions"], r["online_purchases"]) == (1, 1)
    assert r["engagement_score"] == Decimal("18.0")  # 4 * 1 + 2 * 2 + 1 * 10
    assert r["engagement_segment"] == "No Engagement"
    oldest = conn.execute(
        "SELECT min(event_timestamp) AS t FROM ecommerce_events WHERE customer_id = 1"
        " AND event_timestamp > now() - interval '1 year'"
    ).fetchone()["t"]
    expires = conn.execute(
        "SELECT window_expires_at, customer_360_window_exit(%s) AS expected FROM customer_360_store",
        (oldest,),
    ).fetchone()
    assert expires["window_expires_at"] == expires["expected"]


def test_window_exit_is_the_first_day_the_window_leaves_the_row(conn):
    cases = {
        "2023-02-28 10:00+00": "2024-03-01 00:00+00",  # + 1 year + 1 day lands on 29 Feb: one more day
        "2024-02-29 05:00+00": "2025-03-01 00:00+00",
        "2024-06-15 23:59:59+00": "2025-06-16 00:00+00",
        "2024-06-15 00:00+00": "2025-06-16 00:00+00",
    }
    for ts, expected in cases.items():
        got = conn.execute(
            "SELECT customer_360_window_exit(%s::timestamptz) = %s::timestamptz AS ok", (ts, expected)
        ).fetchone()
        assert got["ok"], ts
    # Over four years of days: inside the window the day before the exit, outside on the exit day.
    bad = conn.execute(
        """SELECT count(*) AS n FROM (
               SELECT ts, (customer_360_window_exit(ts) AT TIME ZONE 'UTC')::date AS exit_day
               FROM generate_series('2023-01-01 07:00+00'::timestamptz, '2027-01-01', interval '1 day') ts
           ) x
           WHERE NOT (x.ts >= customer_360_window_start(x.exit_day - 1)
                      AND x.ts < customer_360_window_start(x.exit_day))"""
    ).fetchone()["n"]
    assert bad == 0


def test_duplicates_are_linked_to_the_lowest_id(conn):
    add_customer(conn, 5, email="Pat@Example.com", source_system="crm")
    add_customer(conn, 3, email="  pat@example.COM ", source_system="webshop")
    add_customer(conn, 9, email="pat@example.com", source_system="erp")
    add_customer(conn, 4, email="")
    add_customer(conn, 6, email=" ")
    add_customer(conn, 7, email=None)
    refresh(conn)
    got = {
        r["customer_id"]: (
            r["golden_customer_id"],
            r["duplicate_of"],
            r["is_duplicate"],
            r["duplicate_group_size"],
        )
        for r in conn.execute("SELECT * FROM customer_360_mv").fetchall()
    }
    assert got == {
        3: (3, None, False, 3),
        5: (3, 3, True, 3),
        9: (3, 3, True, 3),
        4: (4, None, False, 1),
        6: (6, None, False, 1),
        7: (7, None, False, 1),
    }

    # The survivor leaves the group (email change): 5 survives; 3 is alone. Only 3 was written to.
    conn.execute("UPDATE crm_customers SET email = 'other@example.com' WHERE customer_id = 3")
    result = refresh(conn)
    assert result["rows_upserted"] == 3
    got = {
        r["customer_id"]: (r["golden_customer_id"], r["duplicate_of"])
        for r in conn.execute("SELECT * FROM customer_360_mv WHERE customer_id IN (3, 5, 9)").fetchall()
    }
    assert got == {3: (3, None), 5: (5, None), 9: (5, 5)}

    # Deleting 5 leaves 9 on its own.
    conn.execute("DELETE FROM crm_customers WHERE customer_id = 5")
    result = refresh(conn)
    assert (result["rows_deleted"], result["rows_upserted"]) == (1, 1)
    r9 = row(conn, 9)
    assert (r9["golden_customer_id"], r9["duplicate_of"], r9["duplicate_group_size"]) == (9, None, 1)
    assert row(conn, 5) is None


# -------------------------------------------------------------------------------------------------
# Change capture and the incremental refresh
# -------------------------------------------------------------------------------------------------


def test_late_event_updates_the_row_after_an_incremental_refresh(conn):
    now = dt.datetime.now(UTC)
    add_customer(conn, 1)
    add_customer(conn, 2)
    add_event(conn, 1, now - dt.timedelta(hours=1))
    refresh(conn)
    assert row(conn, 1)["total_events"] == 1

    # Event time 20 days ago, ingested now: a watermark on event time would never see it.
    add_event(conn, 1, now - dt.timedelta(days=20), "purchase", category="books")
    r = row(conn, 1)
    assert r["total_events"] == 1 and r["refresh_pending"] is True
    result = refresh(conn)
    assert (result["rows_processed"], result["queue_entries"]) == (1, 1)
    r = row(conn, 1)
    assert (r["total_events"], r["online_purchases"], r["favorite_category"]) == (2, 1, "books")
    assert r["active_days"] == 2 and r["refresh_pending"] is False
    assert (
        r["last_activity"]
        == conn.execute("SELECT max(event_timestamp) AS t FROM ecommerce_events").fetchone()["t"]
    )
    assert conn.execute("SELECT count(*) AS n FROM customer_360_dirty").fetchone()["n"] == 0


def test_deletes_propagate(conn):
    d0 = today(conn)
    now = dt.datetime.now(UTC)
    add_customer(conn, 1)
    add_customer(conn, 2)
    add_order(conn, 1, 1, d0, 100)
    add_order(conn, 2, 1, d0, 300)
    add_event(conn, 1, now)
    refresh(conn)
    conn.execute("DELETE FROM erp_orders WHERE order_id = 2")
    conn.execute("DELETE FROM ecommerce_events WHERE customer_id = 1")
    conn.execute("DELETE FROM crm_customers WHERE customer_id = 2")
    result = refresh(conn)
    assert (result["rows_upserted"], result["rows_deleted"], result["rows_processed"]) == (1, 1, 2)
    r = row(conn, 1)
    assert (r["total_orders"], r["total_lifetime_value"], r["total_events"]) == (1, Decimal("100"), 0)
    assert row(conn, 2) is None


def test_financial_changes_propagate_through_the_order_reference(conn):
    d0 = today(conn)
    now = dt.datetime.now(UTC)
    add_customer(conn, 1)
    add_customer(conn, 2)
    add_order(conn, 10, 1, d0, 100)
    add_txn(conn, 1, 7, now, 100, {"order_id": 10}, processed=False)
    # A transaction that arrives before its order.
    add_txn(conn, 2, 8, now, 40, {"order_id": 11})
    refresh(conn)
    assert row(conn, 1)["transaction_count"] == 0

    # The pipeline marks the transaction processed: only that change dirties customer 1.
    conn.execute("UPDATE financial_transactions SET is_processed = true WHERE transaction_id = 1")
    assert refresh(conn)["rows_processed"] == 1
    assert row(conn, 1)["total_transaction_amount"] == Decimal("100")

    conn.execute("UPDATE financial_transactions SET amount = 250 WHERE transaction_id = 1")
    refresh(conn)
    assert row(conn, 1)["total_transaction_amount"] == Decimal("250")

    # The late order links transaction 2 to customer 2.
    add_order(conn, 11, 2, d0, 40)
    refresh(conn)
    assert (row(conn, 2)["transaction_count"], row(conn, 2)["financial_account_ids"]) == (1, [8])

    # Re-pointing the order moves its money to the other customer.
    conn.execute("UPDATE erp_orders SET customer_id = 2 WHERE order_id = 10")
    refresh(conn)
    assert (row(conn, 1)["transaction_count"], row(conn, 2)["transaction_count"]) == (0, 2)
    assert row(conn, 2)["total_transaction_amount"] == Decimal("290")

    conn.execute("DELETE FROM financial_transactions WHERE transaction_id = 2")
    refresh(conn)
    assert row(conn, 2)["total_transaction_amount"] == Decimal("250")

    # A processed transaction on a known order dirties exactly that order's customer.
    add_txn(conn, 7, 9, now, 1, {"order_id": 10})
    assert refresh(conn)["rows_processed"] == 1
    assert (row(conn, 2)["transaction_count"], row(conn, 2)["financial_account_ids"]) == (2, [7, 9])

    # A reference that is not a number never breaks the writer, and dirties nobody.
    add_txn(conn, 3, 9, now, 5, {"order_id": "SO-10"})
    add_txn(conn, 4, 9, now, 5, {"order_id": "99999999999999999999999"})
    add_txn(conn, 5, 9, now, 5, {"other": 1})
    add_txn(conn, 6, 9, now, 5, None)
    assert refresh(conn)["rows_processed"] == 0


def test_truncate_of_a_source_dirties_every_row(conn):
    now = dt.datetime.now(UTC)
    add_customer(conn, 1)
    add_event(conn, 1, now)
    refresh(conn)
    conn.execute("TRUNCATE ecommerce_events")
    assert refresh(conn)["rows_upserted"] == 1
    assert row(conn, 1)["total_events"] == 0
    conn.execute("TRUNCATE crm_customers")
    assert refresh(conn)["rows_deleted"] == 1
    assert conn.execute("SELECT count(*) AS n FROM customer_360_store").fetchone()["n"] == 0


def test_truncate_of_the_transactions_queues_the_orders_of_processed_rows(conn):
    # Captured before the rows go (no transition table for TRUNCATE): the orders of processed rows
    # only, each under an account of its transactions (on Citus, one shard's own rows and queue).
    now = dt.datetime.now(UTC)
    for cid in (1, 2, 3):
        add_customer(conn, cid)
        add_order(conn, 10 + cid, cid, today(conn), 10)
    add_txn(conn, 1, 7, now, 5, {"order_id": 11})
    add_txn(conn, 2, 8, now, 6, {"order_id": 11})
    add_txn(conn, 3, 9, now, 7, {"order_id": 12})
    add_txn(conn, 4, 9, now, 8, {"order_id": 13}, processed=False)
    refresh(conn, full=True)
    conn.execute("TRUNCATE financial_transactions")
    queued = conn.execute(
        "SELECT account_id, order_id, source FROM customer_360_dirty_orders ORDER BY order_id"
    ).fetchall()
    assert [tuple(q.values()) for q in queued] == [
        (7, 11, "truncate financial_transactions"),
        (9, 12, "truncate financial_transactions"),
    ]
    assert refresh(conn)["rows_upserted"] == 2
    assert [row(conn, cid)["transaction_count"] for cid in (1, 2, 3)] == [0, 0, 0]


def test_expired_window_is_recomputed_by_the_incremental_refresh(conn):
    now = dt.datetime.now(UTC)
    add_customer(conn, 1)
    add_customer(conn, 2)
    add_event(conn, 1, now - dt.timedelta(days=3))
    refresh(conn)
    # Pretend the window moved past the row: a stale count and an expiry in the past.
    conn.execute(
        "UPDATE customer_360_store SET total_events = 99, window_expires_at = now() - interval '1 second'"
        " WHERE customer_id = 1"
    )
    result = refresh(conn)
    assert (result["rows_processed"], result["queue_entries"]) == (1, 0)
    r = row(conn, 1)
    assert r["total_events"] == 1
    assert conn.execute(
        "SELECT window_expires_at > now() AS ok FROM customer_360_store WHERE customer_id = 1"
    ).fetchone()["ok"]
    # Nothing windowed: nothing expires.
    assert (
        conn.execute("SELECT window_expires_at FROM customer_360_store WHERE customer_id = 2").fetchone()[
            "window_expires_at"
        ]
        is None
    )


def test_refresh_reports_counts_durations_and_notifies(conn, db_dsn):
    add_customer(conn, 1)
    add_customer(conn, 2)
    with psycopg.connect(db_dsn, autocommit=True) as listener:
        listener.execute("LISTEN opsconsole_c360")
        result = refresh(conn)
        assert (result["rows_processed"], result["queue_entries"]) == (2, 2)
        assert result["refresh_duration"] > dt.timedelta(0)
        notes = list(listener.notifies(timeout=5, stop_after=1))
        assert len(notes) == 1
        payload = json.loads(notes[0].payload)
        assert (payload["mode"], payload["rows_processed"], payload["rows_upserted"]) == ("incremental", 2, 2)
        # An idle run says nothing.
        assert refresh(conn)["rows_processed"] == 0
        assert list(listener.notifies(timeout=0.5)) == []
        full = refresh(conn, full=True)
        assert (full["rows_processed"], full["rows_upserted"], full["queue_entries"]) == (2, 2, 0)
        assert json.loads(next(listener.notifies(timeout=5, stop_after=1)).payload)["mode"] == "full"
    log = conn.execute(
        "SELECT mode, rows_upserted FROM customer_360_refresh_log ORDER BY refresh_id"
    ).fetchall()
    assert [(x["mode"], x["rows_upserted"]) for x in log] == [
        ("incremental", 2),
        ("incremental", 0),
        ("full", 2),
    ]


def test_changes_committed_around_a_refresh_are_not_lost(conn, db_dsn):
    now = dt.datetime.now(UTC)
    add_customer(conn, 1)
    refresh(conn)
    with (
        psycopg.connect(db_dsn, row_factory=dict_row) as writer,
        psycopg.connect(db_dsn, row_factory=dict_row) as refresher,
    ):
        # A writer still open while the refresh runs: its key is not visible, so it stays queued.
        add_event(writer, 1, now - dt.timedelta(days=30))
        assert refresh(refresher)["rows_processed"] == 0
        refresher.commit()
        writer.commit()
        assert row(conn, 1)["total_events"] == 0
        # A refresh still open while a writer commits: the writer's key survives the refresh's commit.
        refresh(refresher)
        add_event(writer, 1, now - dt.timedelta(days=31))
        writer.commit()
        refresher.commit()
    assert conn.execute("SELECT count(*) AS n FROM customer_360_dirty").fetchone()["n"] >= 1
    refresh(conn)
    assert row(conn, 1)["total_events"] == 2


def test_a_role_that_may_only_write_the_sources_is_still_captured(conn):
    import uuid

    role = f"src_writer_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {role}")
    try:
        for table in ("crm_customers", "erp_orders", "ecommerce_events", "financial_transactions"):
            conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {table} TO {role}")
        # A writer of orders claims their ids itself (docs/scaling.md); no grant on the queues or the
        # pipeline ledger: the capture triggers run as the owner (SECURITY DEFINER).
        conn.execute(f"GRANT SELECT, INSERT ON erp_order_keys TO {role}")
        conn.execute(f"SET ROLE {role}")
        add_customer(conn, 1)
        add_order(conn, 1, 1, today(conn), 10)
        add_event(conn, 1, dt.datetime.now(UTC))
        add_txn(conn, 1, 5, dt.datetime.now(UTC), 10, {"order_id": 1})
        conn.execute("UPDATE crm_customers SET email = 'x@y.z'")
        conn.execute("TRUNCATE ecommerce_events")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO customer_360_dirty (customer_id, source) VALUES (2, 'forged')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO customer_360_dirty_orders (order_id, source) VALUES (2, 'forged')")
        conn.execute("RESET ROLE")
        sources = conn.execute(
            "SELECT array_agg(DISTINCT source ORDER BY source) AS s FROM "
            "(SELECT source FROM customer_360_dirty UNION ALL SELECT source FROM customer_360_dirty_orders) q"
        )
        assert sources.fetchone()["s"] == ["crm", "ecommerce_events", "erp_orders", "financial_transactions"]
        refresh(conn)
        r = row(conn, 1)
        assert (r["total_orders"], r["total_events"], r["transaction_count"], r["email"]) == (
            1,
            0,
            1,
            "x@y.z",
        )
    finally:
        conn.execute("RESET ROLE")
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


def test_refresh_refuses_a_snapshot_older_than_its_lock(db_dsn):
    with psycopg.connect(db_dsn) as c:
        c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        with pytest.raises(psycopg.errors.InvalidTransactionState, match="READ COMMITTED"):
            c.execute("SELECT * FROM refresh_customer_360_incremental()")


def test_every_customer_360_function_pins_search_path(conn):
    rows = conn.execute(
        "SELECT proname, proconfig FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
        " AND (proname LIKE 'customer_360%%' OR proname IN ('refresh_customer_360_incremental',"
        " 'refresh_customer_360_full', 'search_customers'))"
    ).fetchall()
    assert len(rows) == 12  # (the order reference is read by reference_order_id, in 10_platform.sql)
    assert all(r["proconfig"] == ["search_path=pg_catalog, public, pg_temp"] for r in rows), rows


# -------------------------------------------------------------------------------------------------
# Search
# -------------------------------------------------------------------------------------------------


def _search_dataset(conn):
    add_customer(conn, 1, "John", "Smith", "john.smith@example.com", "+1 (555) 010-2000")
    add_customer(conn, 2, "Jane", "Smithers", "jane@smithers.io", "555-010-3000")
    add_customer(conn, 3, "Smith", "Jones", "sj@example.org", None)
    add_customer(conn, 4, "Alice", "Wong", "alice.w@example.com", "+44 20 7946 0000")
    add_customer(conn, 5, "Bob", "Blacksmith", "bob@forge.net", None)
    add_customer(conn, 123456, "Ida", "Number", "ida@example.com", None)
    add_customer(conn, 7, "Percent", "Under", "100%_sure@example.com", None)
    refresh(conn)


def search(conn, q, limit=20):
    return conn.execute("SELECT * FROM search_customers(%s, %s)", (q, limit)).fetchall()


def test_search_ranks_fragments(conn):
    _search_dataset(conn)
    hits = search(conn, "smith")
    assert [h["customer_id"] for h in hits] == [3, 1, 2, 5]
    assert hits[0]["score"] == pytest.approx(1.5)  # 'smith jones' starts with it
    assert hits[1]["score"] == pytest.approx(1.0)  # a whole word of 'john smith'
    assert hits[0]["match_kind"] == "name"
    assert [h["customer_id"] for h in search(conn, "smith", limit=2)] == [3, 1]

    hits = search(conn, "alice.w@example.com")
    assert [(h["customer_id"], h["match_kind"], h["score"]) for h in hits][0] == (4, "email", 2.0)
    # A typo still finds the name by trigram similarity.
    assert [h["customer_id"] for h in search(conn, "alise wong")] == [4]
    # Phone fragments ignore punctuation; the fragment covering more of the number ranks first.
    assert [h["customer_id"] for h in search(conn, "555-010")] == [2, 1]
    assert search(conn, "(555) 010 3000")[0]["score"] == pytest.approx(2.0)
    assert {h["match_kind"] for h in search(conn, "555-010")} == {"phone"}
    # Summary columns come from customer 360.
    assert search(conn, "Blacksmith")[0]["activity_segment"] == "No Orders"


def test_search_exact_id_and_uuid(conn):
    _search_dataset(conn)
    hits = search(conn, "123456")
    assert (hits[0]["customer_id"], hits[0]["match_kind"], hits[0]["score"]) == (123456, "id", 2.0)
    uuid = conn.execute("SELECT customer_uuid FROM crm_customers WHERE customer_id = 4").fetchone()[
        "customer_uuid"
    ]
    hits = search(conn, str(uuid).upper())
    assert [(h["customer_id"], h["match_kind"]) for h in hits] == [(4, "uuid")]
    assert search(conn, "00000000-0000-0000-0000-000000000000") == []


def test_search_is_injection_safe_and_wildcards_are_literal(conn):
    _search_dataset(conn)
    assert search(conn, "'; DROP TABLE crm_customers; --") == []
    assert conn.execute("SELECT count(*) AS n FROM crm_customers").fetchone()["n"] == 7
    assert [h["customer_id"] for h in search(conn, "100%_")] == [7]
    assert search(conn, "%%%") == []
    assert search(conn, "___") == []
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        search(conn, "   ")


def test_search_predicates_can_use_the_trigram_indexes(conn):
    conn.execute("SET enable_seqscan = off")
    for predicate, index in [
        ("lower(coalesce(first_name, '') || ' ' || coalesce(last_name, '')) LIKE '%smi%'", "name_trgm"),
        ("lower(coalesce(first_name, '') || ' ' || coalesce(last_name, '')) % 'smith'", "name_trgm"),
        ("lower(email) LIKE '%smi%'", "email_trgm"),
        ("regexp_replace(phone, '[^0-9]', '', 'g') LIKE '%555%'", "phone_trgm"),
    ]:
        plan = "\n".join(
            r["QUERY PLAN"] for r in conn.execute(f"EXPLAIN SELECT 1 FROM crm_customers WHERE {predicate}")
        )
        assert f"crm_customers_{index}_idx" in plan, plan


# -------------------------------------------------------------------------------------------------
# Property: incremental == full recompute, row for row
# -------------------------------------------------------------------------------------------------

CIDS = st.integers(1, 7)  # 7 never gets a CRM row often: orphan orders and events
DAYS = st.integers(0, 400)
# Mostly an email of the customer's own, sometimes a shared one (a duplicate group), empty or NULL.
EMAILS = st.sampled_from(["own", "own", "own", "dup@x.com", " DUP@x.COM ", "", None])

OPS = st.one_of(
    st.tuples(st.just("crm_upsert"), st.integers(1, 6), EMAILS, DAYS, st.sampled_from(["crm", "web"])),
    st.tuples(st.just("crm_delete"), st.integers(1, 6)),
    st.tuples(
        st.just("order_insert"),
        CIDS,
        st.integers(0, 200),
        st.integers(-50, 6000),
        st.sampled_from(["USD", "EUR", None]),
        st.sampled_from(["shipped", "cancelled", None]),
    ),
    st.tuples(st.just("order_update"), st.integers(0, 50), CIDS, st.sampled_from(["shipped", "cancelled"])),
    st.tuples(st.just("order_delete"), st.integers(0, 50)),
    st.tuples(
        st.just("event_insert"),
        st.lists(
            st.tuples(
                CIDS,
                DAYS,
                st.sampled_from(["page_view", "purchase", "add_to_cart"]),
                st.sampled_from(["books", "toys", None]),
                st.sampled_from(["x Mobile y", "Tablet", "X11", None]),
                st.sampled_from(
                    ["00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b", None]
                ),
            ),
            min_size=1,
            max_size=3,
        ),
    ),
    st.tuples(st.just("event_move"), st.integers(0, 50), CIDS),
    st.tuples(st.just("event_delete"), st.integers(0, 50)),
    st.tuples(
        st.just("txn_insert"),
        st.integers(0, 50),
        st.sampled_from([None, None, None, "garbage", 9999]),  # None: a real order of the table
        st.sampled_from([True, True, False]),
        st.integers(-100, 100),
        st.integers(1, 3),
        DAYS,
    ),
    st.tuples(st.just("txn_update"), st.integers(0, 50), st.booleans(), st.integers(0, 50)),
    st.tuples(st.just("txn_delete"), st.integers(0, 50)),
    st.tuples(st.just("refresh")),
    st.tuples(st.just("truncate_events")),
)


def _nth(conn, table, key, k):
    """The (k mod n)-th row's key of a table, or None when it is empty."""
    got = conn.execute(
        f"SELECT {key} AS k FROM {table} ORDER BY {key}"
        f" OFFSET %s %% greatest((SELECT count(*) FROM {table}), 1) LIMIT 1",
        (k,),
    ).fetchone()
    return None if got is None else got["k"]


def _apply(conn, op, counters, d0, now):
    kind = op[0]
    if kind == "crm_upsert":
        _, cid, email, days, system = op
        email = f"c{cid}@x.com" if email == "own" else email
        conn.execute(
            "INSERT INTO crm_customers (customer_id, first_name, email, created_at, source_system)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (customer_id) DO UPDATE"
            " SET email = EXCLUDED.email, first_name = EXCLUDED.first_name,"
            " source_system = EXCLUDED.source_system",
            (cid, f"n{days}", email, now - dt.timedelta(days=days), system),
        )
    elif kind == "crm_delete":
        conn.execute("DELETE FROM crm_customers WHERE customer_id = %s", (op[1],))
    elif kind == "order_insert":
        _, cid, days, amount, currency, status = op
        counters["order"] += 1
        add_order(conn, counters["order"], cid, d0 - dt.timedelta(days=days), amount, currency, status)
    elif kind == "order_update":
        oid = _nth(conn, "erp_orders", "order_id", op[1])
        if oid is not None:
            conn.execute(
                "UPDATE erp_orders SET customer_id = %s, status = %s WHERE order_id = %s", (op[2], op[3], oid)
            )
    elif kind == "order_delete":
        oid = _nth(conn, "erp_orders", "order_id", op[1])
        if oid is not None:
            conn.execute("DELETE FROM erp_orders WHERE order_id = %s", (oid,))
    elif kind == "event_insert":
        rows = [
            (
                session,
                cid,
                now - dt.timedelta(days=days, minutes=7),
                etype,
                json.dumps({"category": cat}) if cat else None,
                ua,
            )
            for cid, days, etype, cat, ua, session in op[1]
        ]
        with conn.cursor() as cur:
            # One statement for all rows: the statement trigger sees several rows at once.
            values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(rows))
            cur.execute(
                "INSERT INTO ecommerce_events (session_id, customer_id, event_timestamp, event_type,"
                f" event_data, user_agent) VALUES {values}",
                [v for r in rows for v in r],
            )
    elif kind == "event_move":
        eid = _nth(conn, "ecommerce_events", "event_id", op[1])
        if eid is not None:
            conn.execute("UPDATE ecommerce_events SET customer_id = %s WHERE event_id = %s", (op[2], eid))
    elif kind == "event_delete":
        eid = _nth(conn, "ecommerce_events", "event_id", op[1])
        if eid is not None:
            conn.execute("DELETE FROM ecommerce_events WHERE event_id = %s", (eid,))
    elif kind == "txn_insert":
        _, k, fallback, processed, amount, account, days = op
        oid = _nth(conn, "erp_orders", "order_id", k)
        ref = {"order_id": oid if oid is not None and fallback is None else fallback}
        counters["txn"] += 1
        add_txn(
            conn, counters["txn"], account, now - dt.timedelta(days=days), amount, ref, processed=processed
        )
    elif kind == "txn_update":
        tid = _nth(conn, "financial_transactions", "transaction_id", op[1])
        oid = _nth(conn, "erp_orders", "order_id", op[3])
        if tid is not None:
            conn.execute(
                "UPDATE financial_transactions SET is_processed = %s,"
                " reference_data = jsonb_build_object('order_id', %s::bigint) WHERE transaction_id = %s",
                (op[2], oid, tid),
            )
    elif kind == "txn_delete":
        tid = _nth(conn, "financial_transactions", "transaction_id", op[1])
        if tid is not None:
            conn.execute("DELETE FROM financial_transactions WHERE transaction_id = %s", (tid,))
    elif kind == "refresh":
        refresh(conn)
    elif kind == "truncate_events":
        conn.execute("TRUNCATE ecommerce_events")


@settings(
    max_examples=int(__import__("os").environ.get("C360_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(OPS, min_size=1, max_size=40))
def test_incremental_refresh_equals_full_recompute(conn, ops):
    # DELETE, not TRUNCATE: the tables are tiny and erp_orders has a few dozen partitions.
    for table in (
        "crm_customers",
        "erp_orders",
        "erp_order_keys",
        "ecommerce_events",
        "financial_transactions",
    ):
        conn.execute(f"DELETE FROM {table}")
    conn.execute("DELETE FROM customer_360_store")
    conn.execute("DELETE FROM customer_360_dirty")
    conn.execute("DELETE FROM customer_360_dirty_orders")
    d0, now = today(conn), dt.datetime.now(UTC)
    counters = {"order": 0, "txn": 0}
    # A known starting point, refreshed, so that the random changes land on existing rows.
    for cid in range(1, 7):
        add_customer(conn, cid, f"F{cid}", "L", f"c{cid}@x.com", created_at=now - dt.timedelta(days=cid))
        counters["order"] += 1
        add_order(conn, counters["order"], cid, d0 - dt.timedelta(days=10 * cid), 100 * cid)
        add_event(conn, cid, now - dt.timedelta(days=cid), category="books")
        counters["txn"] += 1
        add_txn(
            conn, counters["txn"], cid % 2, now - dt.timedelta(days=cid), 10, {"order_id": counters["order"]}
        )
    refresh(conn)
    for op in ops:
        _apply(conn, op, counters, d0, now)
    refresh(conn)
    # last_updated is the only column allowed to differ: it records when the row was computed.
    store = conn.execute("SELECT * FROM customer_360_store ORDER BY customer_id").fetchall()
    full = conn.execute("SELECT * FROM customer_360_rows(NULL) ORDER BY customer_id").fetchall()
    for r in full:
        r["last_updated"] = None
    for r in store:
        r["last_updated"] = None
    assert store == full
    assert conn.execute("SELECT count(*) AS n FROM crm_customers").fetchone()["n"] == len(store)
