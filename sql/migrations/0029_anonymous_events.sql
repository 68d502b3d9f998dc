-- 0029: anonymous e-commerce events get a table of their own, so that ecommerce_events can be keyed by
-- customer (docs/scaling.md, "NULL distribution values": Citus cannot place a row whose distribution
-- column is NULL, and ecommerce_events goes with the customers, by customer_id).
--
-- * ecommerce_anonymous_events holds the events of visitors who were not logged in: the same columns
--   as ecommerce_events but customer_id, keyed (event_id, session_id) and distributed by session_id on
--   Citus (a visit's events stay on one shard). No customer aggregate reads it, so it has no capture.
--   Its event_id is drawn from ecommerce_events' identity: ids stay unique across both tables, and a
--   reader of all events can UNION ALL them.
-- * session_id is NOT NULL there: an event with neither a customer nor a session cannot be placed. A
--   database holding such events stops here, with the count, before anything changes.
-- * The anonymous rows move (ids, times, every column, including columns added by ingest's schema
--   evolution); ecommerce_events.customer_id becomes NOT NULL and its key (event_id, customer_id).
--
-- The move and the key rebuild take ecommerce_events' lock: stop the event loaders while it runs
-- (seconds per million events).
SET lock_timeout = '5s';
SET statement_timeout = '30min';

DO $$
DECLARE
    v_lost bigint;
BEGIN
    SELECT count(*) INTO v_lost FROM ecommerce_events WHERE customer_id IS NULL AND session_id IS NULL;
    IF v_lost > 0 THEN
        RAISE EXCEPTION '% e-commerce event(s) have neither a customer_id nor a session_id; anonymous events are keyed by session from this release on', v_lost
            USING HINT = 'Give them their session_id or customer_id (or delete them) and run the migration again.';
    END IF;
END;
$$;

-- (a new, empty table: nothing reads it yet)
-- squawk-ignore prefer-identity
CREATE TABLE ecommerce_anonymous_events (
    event_id        bigint NOT NULL,
    session_id      uuid NOT NULL,
    event_timestamp timestamptz NOT NULL,                 -- event time, at the source
    event_type      varchar(50) NOT NULL,
    event_data      jsonb,
    page_url        text,
    user_agent      text,
    ip_address      inet,
    processed_at    timestamptz NOT NULL DEFAULT now(),   -- ingestion time, here
    CONSTRAINT ecommerce_anonymous_events_pkey PRIMARY KEY (event_id, session_id)
);
COMMENT ON TABLE ecommerce_anonymous_events IS
    'E-commerce events of visitors who were not logged in (no customer); ecommerce_events holds the rest. '
    'event_id is unique across both tables.';
COMMENT ON COLUMN ecommerce_anonymous_events.processed_at IS 'Ingestion time; late events have processed_at >> event_timestamp.';
CREATE INDEX ecommerce_anonymous_events_session_idx ON ecommerce_anonymous_events (session_id, event_timestamp);
CREATE INDEX ecommerce_anonymous_events_processed_at_idx ON ecommerce_anonymous_events (processed_at);

DO $$
DECLARE
    r      record;
    v_cols text;
BEGIN
    -- One sequence for both tables' event ids: the identity of ecommerce_events.
    EXECUTE format('ALTER TABLE ecommerce_anonymous_events ALTER COLUMN event_id SET DEFAULT nextval(%L::regclass)',
                   pg_get_serial_sequence('public.ecommerce_events', 'event_id'));
    -- Columns that ingest's schema evolution added to ecommerce_events come along, with their type.
    FOR r IN
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS typ
        FROM pg_attribute a
        WHERE a.attrelid = 'public.ecommerce_events'::regclass AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attname <> 'customer_id'
          AND NOT EXISTS (SELECT 1 FROM pg_attribute b
                          WHERE b.attrelid = 'public.ecommerce_anonymous_events'::regclass
                            AND b.attname = a.attname AND NOT b.attisdropped)
        ORDER BY a.attnum
    LOOP
        EXECUTE format('ALTER TABLE ecommerce_anonymous_events ADD COLUMN %I %s', r.attname, r.typ);
    END LOOP;
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO v_cols
    FROM pg_attribute a
    WHERE a.attrelid = 'public.ecommerce_anonymous_events'::regclass AND a.attnum > 0 AND NOT a.attisdropped;
    EXECUTE format('INSERT INTO ecommerce_anonymous_events (%1$s) SELECT %1$s FROM ecommerce_events '
                   'WHERE customer_id IS NULL', v_cols);
END;
$$;

-- The moved rows go (no customer: the customer-360 capture queues nothing for them).
DELETE FROM ecommerce_events WHERE customer_id IS NULL;

-- (no NULL is left: the rows just moved, under the lock this migration announces)
-- squawk-ignore adding-not-nullable-field
ALTER TABLE ecommerce_events ALTER COLUMN customer_id SET NOT NULL;

-- (squawk: a key replaced in place, under the lock this migration announces above)
ALTER TABLE ecommerce_events DROP CONSTRAINT ecommerce_events_pkey;
-- squawk-ignore constraint-missing-not-valid, adding-serial-primary-key-field
ALTER TABLE ecommerce_events ADD CONSTRAINT ecommerce_events_pkey PRIMARY KEY (event_id, customer_id);
COMMENT ON COLUMN ecommerce_events.customer_id IS
    'NOT NULL (0029): the events of visitors who were not logged in go to ecommerce_anonymous_events.';
