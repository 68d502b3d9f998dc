-- 20_data_quality.sql: Data quality: rule compilation and validation, the engine (dq_run), results, the spec's entry points.
--
-- Repeatable definitions: every function, view and trigger here is (re)created by CREATE OR REPLACE, and
-- the runner re-applies ALL files of sql/definitions/ in name order, in one transaction, after the
-- versioned migrations whenever any file's checksum changed. Each object has exactly one CREATE in the
-- tree: edit it here, never in a migration. A migration must not depend on an object created here.
--
-- The engine and the ad-hoc validator.
--
-- Safety model. A rule is either structured (column, operator, value, referenced table, max age) or a
-- boolean expression over its own table's columns. Expressions are never run as written: the
-- validator (dq_compile_expression) tokenises them against an allow-list and re-emits them token by
-- token (identifiers through %I, string literals through %L, keywords/operators/functions from fixed
-- lists), then parse-checks the full check query with PREPARE (no execution) and requires a boolean.
-- The trigger on dq_rule_definitions runs that validation on every insert/update, and the engine runs
-- it again for every rule at every run, so a row forced in behind the trigger's back (trigger disabled,
-- restored dump, direct catalog games) is reported as an error and never executed.
--
-- Expression grammar (what dq_compile_expression accepts; anything else is rejected):
--   expression  := one boolean SQL expression over the columns of the rule's table
--   identifiers := a column of that table, bare (case-folded) or "double quoted"; never followed by "("
--   literals    := 'strings' (doubled '' inside), E'strings' with only \\ and \' escapes (the form
--                  quote_literal gives text holding a backslash), numbers (12, 1.5, .5, 1e3); typed literals
--                  INTERVAL '7 days', DATE '2024-01-01', TIMESTAMPTZ '...'
--   keywords    := AND OR NOT IS NULL TRUE FALSE UNKNOWN ISNULL NOTNULL IN BETWEEN SYMMETRIC LIKE ILIKE
--                  ESCAPE DISTINCT FROM CASE WHEN THEN ELSE END CURRENT_DATE CURRENT_TIMESTAMP
--                  LOCALTIMESTAMP INTERVAL DATE TIMESTAMPTZ
--   operators   := = <> != < <= > >= + - * / % || ~ ~* !~ !~* -> ->> ( ) , and ::type where type is
--                  one of text varchar numeric integer int bigint smallint real date timestamptz
--                  timestamp interval boolean bool jsonb uuid inet
--   functions   := the names in c_functions below (lower, upper, length, btrim, coalesce, abs, round,
--                  date_trunc, date_part, now, ...), only when followed by "("
--   rejected    := ";", comments (-- and /* */), "$" (parameters, dollar quotes), SELECT/WITH/VALUES/TABLE
--                  (subqueries), "." (qualified names), "[", unbalanced parentheses, a comma outside
--                  parentheses, anything not listed above. Max 4000 characters.

------------------------------------------------------------------------------------------------------
-- Name resolution
------------------------------------------------------------------------------------------------------

-- A table named by a rule: 'name' (schema public) or 'schema.name', never a system schema; a table,
-- partitioned table, materialized view, or a view owned by the engine's owner.
CREATE OR REPLACE FUNCTION dq_resolve_table(p_table_name text)
RETURNS regclass
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_parts text[];
    v_schema text;
    v_table text;
    v_oid oid;
    v_kind "char";
    v_owner oid;
    v_rls boolean;
BEGIN
    IF p_table_name IS NULL OR btrim(p_table_name) = '' THEN
        RAISE EXCEPTION 'a table name is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        v_parts := parse_ident(p_table_name);
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'table "%" does not exist (not a valid table name)', p_table_name
            USING ERRCODE = 'undefined_table';
    END;
    IF array_length(v_parts, 1) = 1 THEN
        v_schema := 'public';
        v_table := v_parts[1];
    ELSIF array_length(v_parts, 1) = 2 THEN
        v_schema := v_parts[1];
        v_table := v_parts[2];
    ELSE
        RAISE EXCEPTION 'table "%" does not exist (use name or schema.name)', p_table_name
            USING ERRCODE = 'undefined_table';
    END IF;
    IF v_schema IN ('pg_catalog', 'information_schema', 'pg_toast') OR left(v_schema, 7) = 'pg_temp' THEN
        RAISE EXCEPTION 'table "%": data-quality rules cannot read system schemas', p_table_name
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT c.oid, c.relkind, c.relowner, c.relrowsecurity INTO v_oid, v_kind, v_owner, v_rls
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = v_schema AND c.relname = v_table AND c.relkind IN ('r', 'p', 'v', 'm');
    IF v_oid IS NULL THEN
        RAISE EXCEPTION 'table "%" does not exist', p_table_name USING ERRCODE = 'undefined_table';
    END IF;
    -- Reading a relation can run someone else's code as the reader, who is the engine's owner inside
    -- dq_run (SECURITY DEFINER): a view's functions, and a table's row-security policy expressions
    -- (the owner of a table is exempt from its policies; anyone else runs them). So views, and tables
    -- with row security, are trusted only when the engine's owner owns them. Other tables and
    -- materialized views run no code when read.
    IF v_owner <> (SELECT c.relowner FROM pg_class c WHERE c.oid = 'dq_rule_definitions'::regclass)
       AND (v_kind = 'v' OR v_rls OR EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = v_oid)) THEN
        RAISE EXCEPTION '% "%" is not owned by the owner of the DQ engine and runs code when read (%); check its underlying tables instead',
            CASE v_kind WHEN 'v' THEN 'view' ELSE 'table' END, p_table_name,
            CASE v_kind WHEN 'v' THEN 'a view' ELSE 'row-security policies' END
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN v_oid::regclass;
END;
$$;


-- schema.table, each part quoted: the only form in which a table name enters dynamic SQL.
CREATE OR REPLACE FUNCTION dq_qualified(p_rel regclass)
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT format('%I.%I', n.nspname, c.relname)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = p_rel;
$$;


-- The stored name of a column of p_rel (exact match first, then case-folded), or an error.
CREATE OR REPLACE FUNCTION dq_require_column(p_rel regclass, p_column text)
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_name name;
BEGIN
    IF p_column IS NULL OR p_column = '' THEN
        RAISE EXCEPTION 'a column name is required for table %', p_rel USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT a.attname INTO v_name
    FROM pg_attribute a
    WHERE a.attrelid = p_rel AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attname IN (p_column, lower(p_column))
    ORDER BY a.attname = p_column DESC
    LIMIT 1;
    IF v_name IS NULL THEN
        RAISE EXCEPTION 'column "%" does not exist in table %', p_column, p_rel USING ERRCODE = 'undefined_column';
    END IF;
    RETURN v_name;
END;
$$;


------------------------------------------------------------------------------------------------------
-- The expression validator
------------------------------------------------------------------------------------------------------

-- Tokenises p_expression against the allow-list (grammar in the file header) and returns it re-emitted
-- from its tokens: the returned text, not the input, is what ever reaches a query. Raises
-- invalid_parameter_value (or undefined_column) with the reason and position on rejection. Its own
-- literals hold no backslash (chr(92), [.], [[:space:]] instead), so it reads the same whatever the
-- session's standard_conforming_strings; its output is safe under either setting too (quote_literal).
CREATE OR REPLACE FUNCTION dq_compile_expression(p_rel regclass, p_expression text)
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    c_keywords CONSTANT text[] := ARRAY[
        'and', 'or', 'not', 'is', 'null', 'true', 'false', 'unknown', 'isnull', 'notnull', 'in',
        'between', 'symmetric', 'like', 'ilike', 'escape', 'distinct', 'from', 'case', 'when', 'then',
        'else', 'end', 'current_date', 'current_timestamp', 'localtimestamp', 'interval', 'date',
        'timestamptz'];
    c_functions CONSTANT text[] := ARRAY[
        'lower', 'upper', 'length', 'char_length', 'octet_length', 'btrim', 'ltrim', 'rtrim', 'trim',
        'substr', 'left', 'right', 'replace', 'split_part', 'strpos', 'starts_with', 'concat',
        'coalesce', 'nullif', 'greatest', 'least', 'abs', 'round', 'floor', 'ceil', 'ceiling', 'trunc',
        'mod', 'sign', 'date_trunc', 'date_part', 'now', 'age', 'to_char', 'to_date', 'to_number',
        'isfinite', 'jsonb_typeof', 'jsonb_array_length', 'num_nulls', 'num_nonnulls'];
    c_types CONSTANT text[] := ARRAY[
        'text', 'varchar', 'numeric', 'integer', 'int', 'bigint', 'smallint', 'real', 'date',
        'timestamptz', 'timestamp', 'interval', 'boolean', 'bool', 'jsonb', 'uuid', 'inet'];
    -- Longest first, so that '<=' is not read as '<' then '='.
    c_operators CONSTANT text[] := ARRAY[
        '::', '->>', '!~*', '->', '<=', '>=', '<>', '!=', '!~', '~*', '||', '~', '=', '<', '>', '+', '-',
        '*', '/', '%', '(', ')', ','];
    v_len       integer;
    v_pos       integer := 1;
    v_rest      text;
    v_m         text[];
    v_tok       text;
    v_emit      text;
    v_kind      text;
    v_prev      text := '';
    v_prev_kind text := 'start';
    v_depth     integer := 0;
    v_out       text := '';
    v_col       name;
    v_i         integer;
    v_ch        text;
BEGIN
    IF p_expression IS NULL OR btrim(p_expression) = '' THEN
        RAISE EXCEPTION 'the rule expression is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_len := length(p_expression);
    IF v_len > 4000 THEN
        RAISE EXCEPTION 'the rule expression is longer than 4000 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    WHILE v_pos <= v_len LOOP
        v_rest := substr(p_expression, v_pos);
        IF v_rest ~ '^[[:space:]]' THEN
            v_pos := v_pos + length((regexp_match(v_rest, '^[[:space:]]+'))[1]);
            CONTINUE;
        ELSIF v_rest ~ '^(--|/[*])' THEN
            RAISE EXCEPTION 'comments are not allowed in a rule expression (position %)', v_pos
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF left(v_rest, 1) = ';' THEN
            RAISE EXCEPTION 'a rule is one boolean expression: ";" is not allowed (position %)', v_pos
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF left(v_rest, 1) = '$' THEN
            RAISE EXCEPTION '"$" (parameters, dollar quoting) is not allowed in a rule expression (position %)', v_pos
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF left(v_rest, 1) = '''' THEN
            v_m := regexp_match(v_rest, '^''((?:[^'']|'''')*)''');
            IF v_m IS NULL THEN
                RAISE EXCEPTION 'unterminated string literal at position %', v_pos
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF v_prev_kind IN ('column', 'literal', 'number') THEN
                RAISE EXCEPTION 'a string literal cannot follow % (position %)', v_prev, v_pos
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            v_pos := v_pos + length(v_m[1]) + 2;
            v_emit := quote_literal(replace(v_m[1], '''''', ''''));
            v_kind := 'literal';
        ELSIF v_rest ~ '^[Ee]''' THEN
            -- E'...' is what quote_literal emits for text holding a backslash, so the canonical form
            -- must read back; only the escapes it uses (a doubled backslash, backslash-quote) are taken.
            IF v_prev_kind IN ('column', 'literal', 'number') THEN
                RAISE EXCEPTION 'a string literal cannot follow % (position %)', v_prev, v_pos
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            v_i := 3;
            v_tok := '';
            LOOP
                v_ch := substr(v_rest, v_i, 1);
                IF v_ch = '' THEN
                    RAISE EXCEPTION 'unterminated string literal at position %', v_pos
                        USING ERRCODE = 'invalid_parameter_value';
                ELSIF v_ch = chr(92) THEN
                    IF substr(v_rest, v_i + 1, 1) NOT IN (chr(92), '''') THEN
                        RAISE EXCEPTION 'E''...'' strings may only escape a backslash or a quote (position %)', v_pos + v_i - 1
                            USING ERRCODE = 'invalid_parameter_value';
                    END IF;
                    v_tok := v_tok || substr(v_rest, v_i + 1, 1);
                    v_i := v_i + 2;
                ELSIF v_ch = '''' AND substr(v_rest, v_i + 1, 1) = '''' THEN
                    v_tok := v_tok || '''';
                    v_i := v_i + 2;
                ELSIF v_ch = '''' THEN
                    EXIT;
                ELSE
                    v_tok := v_tok || v_ch;
                    v_i := v_i + 1;
                END IF;
            END LOOP;
            v_pos := v_pos + v_i;
            v_emit := quote_literal(v_tok);
            v_kind := 'literal';
        ELSIF left(v_rest, 1) = '"' THEN
            -- A quoted name is a column, never a type: after '::' only the allow-listed type words pass.
            IF v_prev = '::' THEN
                RAISE EXCEPTION 'cast to a quoted name is not allowed (allowed: %)', array_to_string(c_types, ', ')
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            v_m := regexp_match(v_rest, '^"((?:[^"]|"")+)"');
            IF v_m IS NULL THEN
                RAISE EXCEPTION 'unterminated or empty quoted identifier at position %', v_pos
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            v_tok := replace(v_m[1], '""', '"');
            SELECT a.attname INTO v_col FROM pg_attribute a
            WHERE a.attrelid = p_rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = v_tok;
            IF v_col IS NULL THEN
                RAISE EXCEPTION 'column "%" does not exist in table % (position %)', v_tok, p_rel, v_pos
                    USING ERRCODE = 'undefined_column';
            END IF;
            v_pos := v_pos + length(v_m[1]) + 2;
            v_emit := format('%I', v_col);
            v_kind := 'column';
        ELSIF v_rest ~ '^[.]?[0-9]' THEN
            v_tok := (regexp_match(v_rest, '^((?:[0-9]+(?:[.][0-9]*)?|[.][0-9]+)(?:[eE][+-]?[0-9]+)?)'))[1];
            IF substr(v_rest, length(v_tok) + 1, 1) ~ '^[A-Za-z_.0-9]' THEN
                RAISE EXCEPTION 'malformed number at position %', v_pos USING ERRCODE = 'invalid_parameter_value';
            END IF;
            v_pos := v_pos + length(v_tok);
            v_emit := v_tok;
            v_kind := 'number';
        ELSIF v_rest ~ '^[A-Za-z_]' THEN
            v_tok := (regexp_match(v_rest, '^[A-Za-z_][A-Za-z0-9_]*'))[1];
            v_pos := v_pos + length(v_tok);
            v_tok := lower(v_tok);
            IF v_prev = '::' THEN
                IF NOT v_tok = ANY (c_types) THEN
                    RAISE EXCEPTION 'cast to "%" is not allowed (allowed: %)', v_tok, array_to_string(c_types, ', ')
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
                v_emit := v_tok;
                v_kind := 'type';
            ELSIF v_tok IN ('select', 'with', 'values', 'table') THEN
                RAISE EXCEPTION 'subqueries (%) are not allowed in a rule expression (position %)', upper(v_tok), v_pos - length(v_tok)
                    USING ERRCODE = 'invalid_parameter_value';
            ELSIF v_tok = ANY (c_keywords) THEN
                v_emit := upper(v_tok);
                v_kind := 'keyword';
            ELSIF v_tok = ANY (c_functions) AND substr(p_expression, v_pos) ~ '^[[:space:]]*[(]' THEN
                v_emit := v_tok;
                v_kind := 'function';
            ELSE
                v_col := NULL;
                SELECT a.attname INTO v_col FROM pg_attribute a
                WHERE a.attrelid = p_rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = v_tok;
                IF v_col IS NULL THEN
                    RAISE EXCEPTION 'unknown name "%" at position %: not a column of %, nor an allowed keyword or function',
                        v_tok, v_pos - length(v_tok), p_rel USING ERRCODE = 'invalid_parameter_value';
                END IF;
                v_emit := format('%I', v_col);
                v_kind := 'column';
            END IF;
        ELSE
            v_emit := NULL;
            FOREACH v_tok IN ARRAY c_operators LOOP
                IF left(v_rest, length(v_tok)) = v_tok THEN
                    v_emit := v_tok;
                    EXIT;
                END IF;
            END LOOP;
            IF v_emit IS NULL THEN
                RAISE EXCEPTION 'character "%" at position % is not allowed in a rule expression', left(v_rest, 1), v_pos
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF v_emit = '(' THEN
                -- Only allow-listed functions may be called; a quoted column name followed by "(" would
                -- otherwise call a function of that name.
                IF v_prev_kind IN ('column', 'literal', 'number') THEN
                    RAISE EXCEPTION '"(" after % at position % is not allowed (only allowed functions can be called)', v_prev, v_pos
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
                v_depth := v_depth + 1;
            ELSIF v_emit = ')' THEN
                v_depth := v_depth - 1;
                IF v_depth < 0 THEN
                    RAISE EXCEPTION 'unbalanced parentheses at position %', v_pos USING ERRCODE = 'invalid_parameter_value';
                END IF;
            ELSIF v_emit = ',' AND v_depth = 0 THEN
                RAISE EXCEPTION 'a comma outside parentheses is not allowed (position %)', v_pos
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            v_pos := v_pos + length(v_emit);
            v_kind := 'operator';
        END IF;

        -- Glue only around ( ) , and ::, none of which can merge with a neighbour into another token.
        IF v_out = '' OR v_emit IN (')', ',', '::') OR v_prev IN ('(', '::')
           OR (v_emit = '(' AND v_prev_kind IN ('function', 'type')) THEN
            v_out := v_out || v_emit;
        ELSE
            v_out := v_out || ' ' || v_emit;
        END IF;
        v_prev := v_emit;
        v_prev_kind := v_kind;
    END LOOP;

    IF v_depth <> 0 THEN
        RAISE EXCEPTION 'unbalanced parentheses in the rule expression' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_out = '' THEN
        RAISE EXCEPTION 'the rule expression is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN v_out;
END;
$$;
COMMENT ON FUNCTION dq_compile_expression(regclass, text) IS
    'Allow-list tokeniser for DQ rule expressions; returns the expression re-emitted from its tokens or raises. Grammar: header of 0002_data_quality.sql.';


-- Parse-checks a check query with PREPARE (parse analysis only: nothing runs, no rows are read) and
-- deallocates it. Type errors, unknown operators and non-boolean FILTER conditions surface here.
CREATE OR REPLACE FUNCTION dq_assert_parses(p_sql text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
SET check_function_bodies = on
AS $$
-- Parse-only by construction: the text becomes the body of a SQL function that is created and never
-- called. CREATE FUNCTION validates a SQL body by parsing and analysing every statement in it (names,
-- types, operators, the $1 deadline parameter) and runs none of them, so whatever the text holds,
-- one statement or several, nothing in it executes and no row is read or written. The text reaches
-- the server only as a quoted literal (format %L), and the creation runs in a subtransaction that
-- always ends in an exception, so the probe function never outlives this call.
DECLARE
    v_err text;
BEGIN
    BEGIN
        -- On Citus the probe stays on this node (a temporary function is not propagated, but Citus
        -- refuses any function DDL after a multi-shard read in the transaction); on plain PostgreSQL
        -- this is an unused placeholder setting. Rolled back with the probe.
        PERFORM set_config('citus.enable_ddl_propagation', 'off', true);
        BEGIN
            EXECUTE format('CREATE FUNCTION pg_temp.opsconsole_dq_probe(timestamptz) RETURNS SETOF record '
                           'LANGUAGE sql AS %L', p_sql);
        EXCEPTION WHEN OTHERS THEN
            v_err := SQLERRM;
        END;
        RAISE EXCEPTION USING ERRCODE = 'DQPRS';   -- always: roll the probe back
    EXCEPTION WHEN SQLSTATE 'DQPRS' THEN
        NULL;
    END;
    IF v_err IS NOT NULL THEN
        RAISE EXCEPTION 'the rule does not compile: %', v_err USING ERRCODE = 'invalid_parameter_value';
    END IF;
END;
$$;


------------------------------------------------------------------------------------------------------
-- Check queries: one definition per rule kind. Every query takes $1 = the deadline of its time budget.
------------------------------------------------------------------------------------------------------

-- SET LOCAL statement_timeout inside a function does not limit the statements that function runs (the
-- timer is armed per top-level statement only), so each check query carries its own deadline: this
-- guard is evaluated per scanned row and raises SQLSTATE DQTMO once the budget is spent.
CREATE OR REPLACE FUNCTION dq_deadline_exceeded(p_deadline timestamptz)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE PARALLEL SAFE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'the check ran past its time budget'
        USING ERRCODE = 'DQTMO', HINT = 'Raise the rule''s timeout_ms or the run''s timeout.';
END;
$$;

CREATE OR REPLACE FUNCTION dq_guard_sql()
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public, pg_temp
AS $$ SELECT 'CASE WHEN clock_timestamp() <= $1 THEN true ELSE dq_deadline_exceeded($1) END' $$;


-- One scan of p_rel counting rows and, per predicate, rows that satisfy it:
-- result[1] = rows, result[i + 1] = rows passing predicate i. The predicates are validator output
-- (dq_compile_expression / dq_structured_predicate), never text taken from a row.
CREATE OR REPLACE FUNCTION dq_predicate_pass_sql(p_rel regclass, p_predicates text[])
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT format('SELECT ARRAY[count(*)%s]::bigint[] FROM %s WHERE %s',
                  (SELECT string_agg(format(', count(*) FILTER (WHERE (%s))', u.p), '' ORDER BY u.i)
                   FROM unnest(p_predicates) WITH ORDINALITY AS u(p, i)),
                  dq_qualified(p_rel), dq_guard_sql());
$$;


-- A predicate from structured fields: column, operator, value (jsonb scalar, or array for
-- between/in/not_in). Values are quoted literals, coerced to the column's type by PostgreSQL.
CREATE OR REPLACE FUNCTION dq_structured_predicate(p_rel regclass, p_column text, p_operator text, p_value jsonb)
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_col text := dq_require_column(p_rel, p_column);
    v_list text;
BEGIN
    IF p_operator IN ('=', '<>', '<', '<=', '>', '>=', 'like', 'ilike', 'regex', 'iregex')
       AND (p_value IS NULL OR jsonb_typeof(p_value) IN ('object', 'array', 'null')) THEN
        RAISE EXCEPTION 'operator % needs a scalar value (a JSON string, number or boolean)', p_operator
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    CASE p_operator
        WHEN 'not_null' THEN RETURN format('%I IS NOT NULL', v_col);
        WHEN '='        THEN RETURN format('%I = %L', v_col, p_value #>> '{}');
        WHEN '<>'       THEN RETURN format('%I <> %L', v_col, p_value #>> '{}');
        WHEN '<'        THEN RETURN format('%I < %L', v_col, p_value #>> '{}');
        WHEN '<='       THEN RETURN format('%I <= %L', v_col, p_value #>> '{}');
        WHEN '>'        THEN RETURN format('%I > %L', v_col, p_value #>> '{}');
        WHEN '>='       THEN RETURN format('%I >= %L', v_col, p_value #>> '{}');
        WHEN 'like'     THEN RETURN format('%I LIKE %L', v_col, p_value #>> '{}');
        WHEN 'ilike'    THEN RETURN format('%I ILIKE %L', v_col, p_value #>> '{}');
        WHEN 'regex'    THEN RETURN format('%I ~ %L', v_col, p_value #>> '{}');
        WHEN 'iregex'   THEN RETURN format('%I ~* %L', v_col, p_value #>> '{}');
        WHEN 'between' THEN
            -- CASE, not OR: jsonb_array_length() raises on a non-array and OR has no evaluation order.
            IF (CASE WHEN jsonb_typeof(p_value) = 'array'
                     THEN jsonb_array_length(p_value) <> 2
                          OR jsonb_typeof(p_value -> 0) IN ('object', 'array', 'null')
                          OR jsonb_typeof(p_value -> 1) IN ('object', 'array', 'null')
                     ELSE true END) THEN
                RAISE EXCEPTION 'operator between needs a value [min, max]' USING ERRCODE = 'invalid_parameter_value';
            END IF;
            RETURN format('%I BETWEEN %L AND %L', v_col, p_value ->> 0, p_value ->> 1);
        WHEN 'in', 'not_in' THEN
            IF (CASE WHEN jsonb_typeof(p_value) = 'array'
                     THEN jsonb_array_length(p_value) = 0
                          OR EXISTS (SELECT 1 FROM jsonb_array_elements(p_value) e(v)
                                     WHERE jsonb_typeof(e.v) IN ('object', 'array', 'null'))
                     ELSE true END) THEN
                RAISE EXCEPTION 'operator % needs a non-empty array of scalar values', p_operator
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            SELECT string_agg(format('%L', e.v), ', ' ORDER BY e.i) INTO v_list
            FROM jsonb_array_elements_text(p_value) WITH ORDINALITY AS e(v, i);
            RETURN format(CASE p_operator WHEN 'in' THEN '%I IN (%s)' ELSE '%I NOT IN (%s)' END, v_col, v_list);
        ELSE
            RAISE EXCEPTION 'unknown operator "%" (allowed: not_null, =, <>, <, <=, >, >=, between, in, not_in, like, ilike, regex, iregex)',
                p_operator USING ERRCODE = 'invalid_parameter_value';
    END CASE;
END;
$$;


-- A validated boolean expression (tokenised, then parse-checked as a FILTER condition): the one path
-- by which an expression written by a person reaches a query, for rules and validate_data_quality.
CREATE OR REPLACE FUNCTION dq_validated_predicate(p_rel regclass, p_expression text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_pred text := dq_compile_expression(p_rel, p_expression);
BEGIN
    PERFORM dq_assert_parses(dq_predicate_pass_sql(p_rel, ARRAY[v_pred]));
    RETURN v_pred;
END;
$$;


-- Compiles one rule into its check query, or raises with the reason. Called by the trigger on insert
-- and update and by the engine before every execution.
CREATE OR REPLACE FUNCTION dq_compile_rule(p_rule dq_rule_definitions)
RETURNS dq_compiled_rule
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    c dq_compiled_rule;
    v_structured boolean := p_rule.column_name IS NOT NULL OR p_rule.operator IS NOT NULL OR p_rule.value IS NOT NULL;
    v_keys text[];
    v_item text;
    v_ref regclass;
    v_ref_col text;
    v_col text;
    v_type regtype;
BEGIN
    c.rel := dq_resolve_table(p_rule.table_name);
    IF p_rule.rule_type IN ('completeness', 'validity', 'accuracy', 'uniqueness')
       AND (p_rule.reference_table IS NOT NULL OR p_rule.reference_column IS NOT NULL OR p_rule.max_age IS NOT NULL) THEN
        RAISE EXCEPTION '% rules do not use reference_table, reference_column or max_age', p_rule.rule_type
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    CASE p_rule.rule_type
    WHEN 'completeness', 'validity', 'accuracy' THEN
        c.kind := 'predicate';
        IF p_rule.rule_expression IS NOT NULL AND v_structured THEN
            RAISE EXCEPTION 'give either rule_expression or column_name/operator/value, not both'
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF p_rule.rule_expression IS NOT NULL THEN
            c.predicate := dq_validated_predicate(c.rel, p_rule.rule_expression);
        ELSIF p_rule.column_name IS NOT NULL THEN
            IF p_rule.operator IS NULL AND p_rule.rule_type <> 'completeness' THEN
                RAISE EXCEPTION '% rules need an operator with their column' , p_rule.rule_type
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF coalesce(p_rule.operator, 'not_null') = 'not_null' AND p_rule.value IS NOT NULL THEN
                RAISE EXCEPTION 'operator not_null takes no value' USING ERRCODE = 'invalid_parameter_value';
            END IF;
            c.predicate := dq_structured_predicate(c.rel, p_rule.column_name,
                                                   coalesce(p_rule.operator, 'not_null'), p_rule.value);
            PERFORM dq_assert_parses(dq_predicate_pass_sql(c.rel, ARRAY[c.predicate]));
        ELSE
            RAISE EXCEPTION '% rules need a rule_expression or a column_name (with operator and value)', p_rule.rule_type
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        c.check_sql := dq_predicate_pass_sql(c.rel, ARRAY[c.predicate]);
        c.display := c.predicate;

    WHEN 'uniqueness' THEN
        c.kind := 'uniqueness';
        IF p_rule.operator IS NOT NULL OR p_rule.value IS NOT NULL
           OR (p_rule.rule_expression IS NOT NULL AND p_rule.column_name IS NOT NULL) THEN
            RAISE EXCEPTION 'uniqueness rules take a column list, in rule_expression or column_name'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        -- A comma-separated list of column names (bare or "quoted"), nothing else.
        IF coalesce(p_rule.rule_expression, p_rule.column_name) IS NULL
           OR coalesce(p_rule.rule_expression, p_rule.column_name)
              !~ '^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*|"([^"]|"")+")[[:space:]]*(,[[:space:]]*([A-Za-z_][A-Za-z0-9_]*|"([^"]|"")+")[[:space:]]*)*$' THEN
            RAISE EXCEPTION 'uniqueness rules need a comma-separated list of columns, e.g. ''customer_id'' or ''account_id, batch_id'''
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        FOR v_item IN
            SELECT m[1] FROM regexp_matches(coalesce(p_rule.rule_expression, p_rule.column_name),
                                            '([A-Za-z_][A-Za-z0-9_]*|"(?:[^"]|"")+")', 'g') AS m
        LOOP
            IF left(v_item, 1) = '"' THEN
                v_col := replace(substr(v_item, 2, length(v_item) - 2), '""', '"');
                PERFORM 1 FROM pg_attribute a
                WHERE a.attrelid = c.rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = v_col;
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'column "%" does not exist in table %', v_col, c.rel USING ERRCODE = 'undefined_column';
                END IF;
            ELSE
                v_col := dq_require_column(c.rel, lower(v_item));
            END IF;
            v_keys := v_keys || v_col;
        END LOOP;
        -- Rows per key, then keys: the time guard runs per scanned row and again per key coming out
        -- of the grouping, so a long sort or hash of the keys is cut off by the same budget.
        c.check_sql := format(
            'SELECT ARRAY[coalesce(sum(g.n), 0), count(*) FILTER (WHERE g.k)]::bigint[] '
            'FROM (SELECT %s AS k, count(*) AS n FROM %s WHERE %s GROUP BY %s) AS g WHERE %s',
            (SELECT string_agg(format('%I IS NOT NULL', k), ' AND ' ORDER BY i)
             FROM unnest(v_keys) WITH ORDINALITY AS u(k, i)),
            dq_qualified(c.rel), dq_guard_sql(),
            (SELECT string_agg(format('%I', k), ', ' ORDER BY i) FROM unnest(v_keys) WITH ORDINALITY AS u(k, i)),
            dq_guard_sql());
        c.display := format('unique (%s)', array_to_string(v_keys, ', '));

    WHEN 'consistency' THEN
        c.kind := 'consistency';
        IF p_rule.rule_expression IS NOT NULL OR p_rule.operator IS NOT NULL OR p_rule.value IS NOT NULL
           OR p_rule.max_age IS NOT NULL THEN
            RAISE EXCEPTION 'consistency rules are structured: column_name, reference_table, reference_column'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF p_rule.column_name IS NULL OR p_rule.reference_table IS NULL THEN
            RAISE EXCEPTION 'consistency rules need column_name and reference_table (reference_column defaults to column_name)'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_col := dq_require_column(c.rel, p_rule.column_name);
        v_ref := dq_resolve_table(p_rule.reference_table);
        v_ref_col := dq_require_column(v_ref, coalesce(p_rule.reference_column, p_rule.column_name));
        -- Foreign-key semantics: a NULL reference passes; a value must exist in the referenced column.
        c.check_sql := format(
            'SELECT ARRAY[count(*), count(*) FILTER (WHERE t.%I IS NULL OR r.k IS NOT NULL)]::bigint[] '
            'FROM %s AS t LEFT JOIN (SELECT DISTINCT %I AS k FROM %s WHERE %s) AS r ON r.k = t.%I WHERE %s',
            v_col, dq_qualified(c.rel), v_ref_col, dq_qualified(v_ref), dq_guard_sql(), v_col, dq_guard_sql());
        c.display := format('%s -> %s.%s', v_col, v_ref, v_ref_col);

    WHEN 'freshness' THEN
        c.kind := 'freshness';
        IF p_rule.rule_expression IS NOT NULL OR p_rule.operator IS NOT NULL OR p_rule.value IS NOT NULL
           OR p_rule.reference_table IS NOT NULL OR p_rule.reference_column IS NOT NULL THEN
            RAISE EXCEPTION 'freshness rules are structured: column_name and max_age'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF p_rule.column_name IS NULL OR p_rule.max_age IS NULL THEN
            RAISE EXCEPTION 'freshness rules need column_name (a timestamp or date column) and max_age'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_col := dq_require_column(c.rel, p_rule.column_name);
        SELECT a.atttypid::regtype INTO v_type FROM pg_attribute a WHERE a.attrelid = c.rel AND a.attname = v_col;
        IF v_type NOT IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype) THEN
            RAISE EXCEPTION 'freshness column "%" is %, not a timestamp or date', v_col, v_type
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        -- The newest value as "first row in descending order": answered from an index when there is
        -- one (the guard is a filter on the rows read, one row with an index), and a full scan without
        -- one is cut off by the time guard like any other rule.
        c.check_sql := format('SELECT %I::timestamptz FROM %s WHERE %I IS NOT NULL AND %s ORDER BY %I DESC LIMIT 1',
                              v_col, dq_qualified(c.rel), v_col, dq_guard_sql(), v_col);
        c.column_name := v_col;
        c.max_age := p_rule.max_age;
        c.display := format('max(%s) newer than %s', v_col, p_rule.max_age);

    ELSE
        RAISE EXCEPTION 'unknown rule type "%" (allowed: completeness, uniqueness, validity, accuracy, consistency, freshness)',
            p_rule.rule_type USING ERRCODE = 'invalid_parameter_value';
    END CASE;

    PERFORM dq_assert_parses(c.check_sql);
    RETURN c;
END;
$$;

CREATE OR REPLACE FUNCTION dq_rule_definitions_validate()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    c dq_compiled_rule;
BEGIN
    -- Switching a rule off must work even when it no longer compiles (its table was dropped, say);
    -- it is validated again when switched back on, and at every run in any case.
    IF TG_OP = 'UPDATE' AND NOT NEW.is_active
       AND (NEW.table_name, NEW.rule_type, NEW.rule_expression, NEW.column_name, NEW.operator, NEW.value,
            NEW.reference_table, NEW.reference_column, NEW.max_age)
           IS NOT DISTINCT FROM
           (OLD.table_name, OLD.rule_type, OLD.rule_expression, OLD.column_name, OLD.operator, OLD.value,
            OLD.reference_table, OLD.reference_column, OLD.max_age) THEN
        NEW.updated_at := clock_timestamp();
        RETURN NEW;
    END IF;
    BEGIN
        c := dq_compile_rule(NEW);
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'DQ rule "%" rejected: %', NEW.rule_name, SQLERRM USING ERRCODE = SQLSTATE;
    END;
    NEW.normalized_definition := c.display;
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := clock_timestamp();
    END IF;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE TRIGGER dq_rule_definitions_validate BEFORE INSERT OR UPDATE ON dq_rule_definitions
    FOR EACH ROW EXECUTE FUNCTION dq_rule_definitions_validate();


------------------------------------------------------------------------------------------------------
-- The engine
------------------------------------------------------------------------------------------------------

-- Appends one result row to data_quality_metrics: the single writer of DQ results.
CREATE OR REPLACE FUNCTION dq_record_result(
    p_run_id bigint,
    p_rule dq_rule_definitions,
    p_status text,
    p_score numeric,
    p_total bigint,
    p_passed bigint,
    p_message text,
    p_duration_ms numeric,
    p_details jsonb DEFAULT '{}'::jsonb
)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, public, pg_temp
AS $$
    INSERT INTO data_quality_metrics (
        source_table, metric_name, metric_value, threshold_value, status, check_timestamp, details,
        run_id, rule_id, rule_type, severity, total_rows, passed_rows, failed_rows, message, duration_ms)
    VALUES (
        p_rule.table_name, p_rule.rule_name, p_score, p_rule.threshold_value, p_status, clock_timestamp(),
        jsonb_build_object('total_rows', p_total, 'passed_rows', p_passed, 'rule_type', p_rule.rule_type,
                           'severity', p_rule.severity) || coalesce(p_details, '{}'::jsonb),
        p_run_id, p_rule.rule_id, p_rule.rule_type, p_rule.severity, p_total, p_passed, p_total - p_passed,
        p_message, round(p_duration_ms, 3));
$$;


-- Score, status and message of a counting rule (predicate, uniqueness, consistency): one definition.
-- score = passing rows / rows; it passes when score >= threshold (compared unrounded). An empty table
-- has nothing to violate the rule: it passes with status 'warn' and no score.
CREATE OR REPLACE FUNCTION dq_record_counts(p_run_id bigint, p_rule dq_rule_definitions, p_total bigint,
                                 p_passed bigint, p_duration_ms numeric)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_score numeric;
    v_detail text;
BEGIN
    IF p_total = 0 THEN
        PERFORM dq_record_result(p_run_id, p_rule, 'warn', NULL, p_total, p_passed,
                                 format('No rows in %s; nothing to check', p_rule.table_name), p_duration_ms);
        RETURN;
    END IF;
    v_score := p_passed::numeric / p_total;
    v_detail := CASE p_rule.rule_type
        WHEN 'uniqueness' THEN format('%s distinct keys in %s rows', p_passed, p_total)
        WHEN 'consistency' THEN format('%s of %s rows reference a missing %s.%s', p_total - p_passed, p_total,
                                       p_rule.reference_table, coalesce(p_rule.reference_column, p_rule.column_name))
        ELSE format('%s of %s rows fail', p_total - p_passed, p_total)
    END;
    PERFORM dq_record_result(
        p_run_id, p_rule, CASE WHEN v_score >= p_rule.threshold_value THEN 'pass' ELSE 'fail' END, v_score,
        p_total, p_passed,
        format('Quality score: %s%% (threshold: %s%%); %s',
               round(v_score * 100, 2), round(p_rule.threshold_value * 100, 2), v_detail),
        p_duration_ms);
END;
$$;

-- A data error can quote the value that broke it ('invalid input syntax for type integer: "jane@..."'),
-- and data_quality_metrics is readable by viewers: for data exceptions and integrity errors (SQLSTATE
-- classes 22 and 23, except 22023 which our validator raises about rule text) quoted text is replaced
-- by "..." before it is stored. The SQLSTATE and the shape of the message are kept.
CREATE OR REPLACE FUNCTION dq_scrub_message(p_message text, p_sqlstate text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT CASE WHEN left(p_sqlstate, 2) IN ('22', '23') AND p_sqlstate <> '22023'
                THEN regexp_replace(regexp_replace(p_message, '"[^"]*"', '"..."', 'g'),
                                    '''(?:[^'']|'''')*''', '''...''', 'g')
                ELSE p_message END;
$$;

CREATE OR REPLACE FUNCTION dq_record_error(p_run_id bigint, p_rule dq_rule_definitions, p_error text, p_sqlstate text,
                                p_duration_ms numeric)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT dq_record_result(p_run_id, p_rule, 'error', NULL, NULL, NULL,
                            format('Error executing rule: %s', dq_scrub_message(p_error, p_sqlstate)), p_duration_ms,
                            jsonb_build_object('error', dq_scrub_message(p_error, p_sqlstate), 'sqlstate', p_sqlstate));
$$;


-- One query for one or more compiled rules of a table: several predicate rules share one scan;
-- uniqueness, consistency and freshness rules run alone. Errors are recorded, never raised. When a
-- shared scan fails for a reason other than its time budget, its rules are retried one by one so that
-- only the faulty rule reports the error.
CREATE OR REPLACE FUNCTION dq_execute_rules(p_run_id bigint, p_rules dq_rule_definitions[], p_compiled dq_compiled_rule[],
                                 p_timeout_ms integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_n integer := cardinality(p_rules);
    v_first dq_compiled_rule := p_compiled[1];
    v_sql text;
    v_counts bigint[];
    v_newest timestamptz;
    v_age interval;
    v_t0 timestamptz;
    v_ms numeric;
    v_err text;
    v_state text;
    i integer;
BEGIN
    IF v_n = 0 THEN
        RETURN;
    END IF;
    IF v_n = 1 THEN
        v_sql := v_first.check_sql;
    ELSE
        v_sql := dq_predicate_pass_sql(v_first.rel, ARRAY(SELECT (c).predicate FROM unnest(p_compiled) AS c));
    END IF;
    v_t0 := clock_timestamp();
    BEGIN
        -- lock_timeout (unlike statement_timeout) is honoured inside functions: a table locked by
        -- someone else costs at most the same budget. The caller's SET clause restores it.
        PERFORM set_config('lock_timeout', p_timeout_ms || 'ms', true);
        IF v_first.kind = 'freshness' THEN
            EXECUTE v_sql INTO v_newest USING v_t0 + make_interval(secs => p_timeout_ms / 1000.0);
        ELSE
            EXECUTE v_sql INTO v_counts USING v_t0 + make_interval(secs => p_timeout_ms / 1000.0);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        v_err := CASE SQLSTATE WHEN 'DQTMO' THEN format('time budget of %s ms exceeded', p_timeout_ms)
                               WHEN '55P03' THEN format('table locked for longer than the time budget of %s ms', p_timeout_ms)
                               ELSE SQLERRM END;
        v_state := SQLSTATE;
    END;
    v_ms := extract(epoch FROM clock_timestamp() - v_t0) * 1000;

    IF v_state IS NOT NULL THEN
        IF v_n > 1 AND v_state NOT IN ('DQTMO', '55P03') THEN
            FOR i IN 1 .. v_n LOOP
                PERFORM dq_execute_rules(p_run_id, ARRAY[p_rules[i]], ARRAY[p_compiled[i]], p_timeout_ms);
            END LOOP;
        ELSE
            FOR i IN 1 .. v_n LOOP
                PERFORM dq_record_error(p_run_id, p_rules[i], v_err, v_state, v_ms);
            END LOOP;
        END IF;
        RETURN;
    END IF;

    IF v_first.kind = 'freshness' THEN
        v_age := date_trunc('second', clock_timestamp() - v_newest);
        PERFORM dq_record_result(
            p_run_id, p_rules[1],
            CASE WHEN v_newest IS NOT NULL AND v_age <= v_first.max_age THEN 'pass' ELSE 'fail' END,
            CASE WHEN v_newest IS NOT NULL AND v_age <= v_first.max_age THEN 1 ELSE 0 END,
            NULL, NULL,
            CASE WHEN v_newest IS NULL
                 THEN format('No value in %s.%s: the table is empty or the column is all NULL',
                             p_rules[1].table_name, v_first.column_name)
                 ELSE format('Newest %s is %s old (max age %s)', v_first.column_name, v_age, v_first.max_age) END,
            v_ms,
            jsonb_build_object('newest', v_newest, 'age_seconds', extract(epoch FROM v_age),
                               'max_age_seconds', extract(epoch FROM v_first.max_age)));
    ELSE
        FOR i IN 1 .. v_n LOOP
            PERFORM dq_record_counts(p_run_id, p_rules[i], v_counts[1], v_counts[i + 1], v_ms);
        END LOOP;
    END IF;
END;
$$;


-- The engine: runs the active rules (or those of one table, or one named rule even if inactive), one
-- table at a time, groups the results under a new dq_runs row, appends them to data_quality_metrics,
-- notifies 'opsconsole_dq' and writes an audit row. p_timeout_ms overrides each rule's time budget.
CREATE OR REPLACE FUNCTION dq_run(p_table_name text DEFAULT NULL, p_rule_name text DEFAULT NULL,
                       p_timeout_ms integer DEFAULT NULL)
RETURNS TABLE(
    run_id bigint,
    rule_id bigint,
    rule_name varchar(100),
    table_name varchar(100),
    rule_type varchar(50),
    passed boolean,
    score numeric(10,4),
    threshold_value numeric(10,4),
    severity varchar(20),
    status varchar(20),
    message text,
    total_rows bigint,
    failed_rows bigint,
    duration_ms numeric
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = 0  -- so that the per-query lock_timeout set inside ends with the run
SET "TimeZone" = 'UTC'  -- date rules (current_date, date_trunc, ::date) score the same for every caller
AS $$
#variable_conflict use_column
DECLARE
    v_run bigint;
    v_t0 timestamptz := clock_timestamp();
    v_default_ms integer;
    v_table text;
    v_rule dq_rule_definitions;
    v_compiled dq_compiled_rule;
    v_pred_rules dq_rule_definitions[];
    v_pred_compiled dq_compiled_rule[];
    v_pred_ms integer;
    v_ms integer;
    v_summary record;
    v_final text;
    v_severe record;
BEGIN
    IF p_timeout_ms IS NOT NULL AND p_timeout_ms <= 0 THEN
        RAISE EXCEPTION 'the timeout must be a positive number of milliseconds' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_rule_name IS NOT NULL AND NOT EXISTS (SELECT 1 FROM dq_rule_definitions d WHERE d.rule_name = p_rule_name) THEN
        RAISE EXCEPTION 'no DQ rule is named "%"', p_rule_name USING ERRCODE = 'no_data_found';
    END IF;
    IF (p_table_name IS NOT NULL OR p_rule_name IS NOT NULL) AND NOT EXISTS (
        SELECT 1 FROM dq_rule_definitions d
        WHERE (p_table_name IS NULL OR d.table_name = p_table_name)
          AND (d.rule_name = p_rule_name OR (p_rule_name IS NULL AND d.is_active))) THEN
        RAISE EXCEPTION 'no active DQ rule matches table "%"%', p_table_name,
            CASE WHEN p_rule_name IS NULL THEN '' ELSE format(' and rule "%s"', p_rule_name) END
            USING ERRCODE = 'no_data_found';
    END IF;
    v_default_ms := coalesce(p_timeout_ms, setting_integer('opsconsole.dq_timeout_ms', 30000));

    INSERT INTO dq_runs (table_filter, rule_filter, timeout_ms)
    VALUES (p_table_name, p_rule_name, p_timeout_ms)
    RETURNING dq_runs.run_id INTO v_run;

    FOR v_table IN
        SELECT DISTINCT d.table_name FROM dq_rule_definitions d
        WHERE (p_table_name IS NULL OR d.table_name = p_table_name)
          AND (d.rule_name = p_rule_name OR (p_rule_name IS NULL AND d.is_active))
        ORDER BY 1
    LOOP
        v_pred_rules := '{}';
        v_pred_compiled := '{}';
        v_pred_ms := 0;
        FOR v_rule IN
            SELECT d.* FROM dq_rule_definitions d
            WHERE d.table_name = v_table
              AND (d.rule_name = p_rule_name OR (p_rule_name IS NULL AND d.is_active))
            ORDER BY d.rule_name
        LOOP
            v_ms := coalesce(p_timeout_ms, v_rule.timeout_ms, v_default_ms);
            -- Re-validate at run time: a rule that got past (or around) the trigger never runs as written.
            BEGIN
                v_compiled := dq_compile_rule(v_rule);
            EXCEPTION WHEN OTHERS THEN
                PERFORM dq_record_error(v_run, v_rule, 'rule rejected by the validator: ' || SQLERRM, SQLSTATE, 0);
                CONTINUE;
            END;
            IF v_compiled.kind = 'predicate' THEN
                v_pred_rules := v_pred_rules || v_rule;
                v_pred_compiled := v_pred_compiled || v_compiled;
                v_pred_ms := greatest(v_pred_ms, v_ms);
            ELSE
                PERFORM dq_execute_rules(v_run, ARRAY[v_rule], ARRAY[v_compiled], v_ms);
            END IF;
        END LOOP;
        -- All predicate rules of the table in one scan, within the largest of their budgets.
        PERFORM dq_execute_rules(v_run, v_pred_rules, v_pred_compiled, v_pred_ms);
    END LOOP;

    SELECT count(*) AS total,
           count(*) FILTER (WHERE m.status IN ('pass', 'warn')) AS passed,
           count(*) FILTER (WHERE m.status = 'fail') AS failed,
           count(*) FILTER (WHERE m.status = 'error') AS errored,
           count(*) FILTER (WHERE m.status IN ('fail', 'error') AND m.severity IN ('error', 'critical')) AS severe
    INTO v_summary
    FROM data_quality_metrics m WHERE m.run_id = v_run;
    v_final := CASE WHEN v_summary.errored > 0 THEN 'error' WHEN v_summary.failed > 0 THEN 'failed' ELSE 'passed' END;

    UPDATE dq_runs r
    SET finished_at = clock_timestamp(), status = v_final, rules_total = v_summary.total,
        rules_passed = v_summary.passed, rules_failed = v_summary.failed, rules_errored = v_summary.errored,
        severe_failures = v_summary.severe,
        duration_ms = round(extract(epoch FROM clock_timestamp() - v_t0)::numeric * 1000, 3)
    WHERE r.run_id = v_run;

    -- Push: one message per failed rule of severity error/critical, then one for the finished run.
    FOR v_severe IN
        SELECT m.metric_name, m.source_table, m.severity, m.status, round(m.metric_value, 4) AS score
        FROM data_quality_metrics m
        WHERE m.run_id = v_run AND m.status IN ('fail', 'error') AND m.severity IN ('error', 'critical')
        ORDER BY m.metric_id
    LOOP
        PERFORM pg_notify('opsconsole_dq', json_build_object(
            'event', 'rule_failed', 'run_id', v_run, 'rule_name', v_severe.metric_name,
            'table_name', v_severe.source_table, 'severity', v_severe.severity,
            'status', v_severe.status, 'score', v_severe.score)::text);
    END LOOP;
    PERFORM pg_notify('opsconsole_dq', json_build_object(
        'event', 'run_completed', 'run_id', v_run, 'status', v_final, 'rules', v_summary.total,
        'failed', v_summary.failed, 'errors', v_summary.errored, 'severe', v_summary.severe)::text);

    PERFORM record_audit(
        'dq.run',
        jsonb_build_object('table', p_table_name, 'rule', p_rule_name, 'timeout_ms', p_timeout_ms),
        jsonb_build_object('run_id', v_run, 'status', v_final, 'rules', v_summary.total, 'failed', v_summary.failed,
                           'errors', v_summary.errored, 'severe', v_summary.severe),
        'ok',
        round(extract(epoch FROM clock_timestamp() - v_t0)::numeric * 1000, 3));

    RETURN QUERY
    SELECT m.run_id, m.rule_id, m.metric_name::varchar(100), m.source_table::varchar(100), m.rule_type::varchar(50),
           m.status IN ('pass', 'warn'), round(m.metric_value, 4)::numeric(10,4), m.threshold_value::numeric(10,4),
           m.severity::varchar(20), m.status::varchar(20), m.message, m.total_rows, m.failed_rows, m.duration_ms
    FROM data_quality_metrics m
    WHERE m.run_id = v_run
    ORDER BY m.source_table, m.metric_name;
END;
$$;
COMMENT ON FUNCTION dq_run(text, text, integer) IS
    'Run DQ rules (all active, one table, or one named rule), grouped under a dq_runs row; results also in data_quality_metrics.';


-- The spec's entry point: every active rule, the spec's result columns.
CREATE OR REPLACE FUNCTION execute_data_quality_checks()
RETURNS TABLE(
    rule_name varchar(100),
    table_name varchar(100),
    rule_type varchar(50),
    passed boolean,
    score numeric(10,4),
    threshold_value numeric(10,4),
    severity varchar(20),
    message text
)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT r.rule_name, r.table_name, r.rule_type, r.passed, r.score, r.threshold_value, r.severity, r.message
    FROM dq_run() AS r;
$$;


-- The same with filters; p_table_name has no default so that the zero-argument call stays unambiguous.
CREATE OR REPLACE FUNCTION execute_data_quality_checks(p_table_name text, p_rule_name text DEFAULT NULL,
                                            p_timeout_ms integer DEFAULT NULL)
RETURNS TABLE(
    rule_name varchar(100),
    table_name varchar(100),
    rule_type varchar(50),
    passed boolean,
    score numeric(10,4),
    threshold_value numeric(10,4),
    severity varchar(20),
    message text
)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT r.rule_name, r.table_name, r.rule_type, r.passed, r.score, r.threshold_value, r.severity, r.message
    FROM dq_run(p_table_name, p_rule_name, p_timeout_ms) AS r;
$$;


------------------------------------------------------------------------------------------------------
-- Rule management (the action behind `opsconsole dq add`)
------------------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION dq_add_rule(
    p_rule_name text,
    p_table_name text,
    p_rule_type text,
    p_rule_expression text DEFAULT NULL,
    p_threshold_value numeric DEFAULT 1.0,
    p_severity text DEFAULT 'warning',
    p_column_name text DEFAULT NULL,
    p_operator text DEFAULT NULL,
    p_value jsonb DEFAULT NULL,
    p_reference_table text DEFAULT NULL,
    p_reference_column text DEFAULT NULL,
    p_max_age interval DEFAULT NULL,
    p_timeout_ms integer DEFAULT NULL,
    p_description text DEFAULT NULL,
    p_is_active boolean DEFAULT true
)
RETURNS dq_rule_definitions
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_t0 timestamptz := clock_timestamp();
    v_row dq_rule_definitions;
BEGIN
    IF p_rule_name IS NULL OR btrim(p_rule_name) = '' OR length(p_rule_name) > 100 THEN
        RAISE EXCEPTION 'a rule name of 1 to 100 characters is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM dq_rule_definitions d WHERE d.rule_name = p_rule_name) THEN
        RAISE EXCEPTION 'a DQ rule named "%" already exists', p_rule_name USING ERRCODE = 'unique_violation';
    END IF;
    IF p_severity NOT IN ('info', 'warning', 'error', 'critical') THEN
        RAISE EXCEPTION 'severity must be info, warning, error or critical' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_threshold_value IS NULL OR p_threshold_value < 0 OR p_threshold_value > 1 THEN
        RAISE EXCEPTION 'the threshold must be between 0 and 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO dq_rule_definitions (
        rule_name, table_name, rule_type, rule_expression, threshold_value, severity, is_active, column_name,
        operator, value, reference_table, reference_column, max_age, timeout_ms, description)
    VALUES (
        p_rule_name, p_table_name, p_rule_type, p_rule_expression, p_threshold_value, p_severity, p_is_active,
        p_column_name, p_operator, p_value, p_reference_table, p_reference_column, p_max_age, p_timeout_ms,
        p_description)
    RETURNING * INTO v_row;
    PERFORM record_audit(
        'dq.add_rule',
        jsonb_strip_nulls(jsonb_build_object(
            'rule_name', p_rule_name, 'table_name', p_table_name, 'rule_type', p_rule_type,
            'rule_expression', p_rule_expression, 'threshold_value', p_threshold_value, 'severity', p_severity,
            'column_name', p_column_name, 'operator', p_operator, 'value', p_value,
            'reference_table', p_reference_table, 'reference_column', p_reference_column,
            'max_age', p_max_age, 'timeout_ms', p_timeout_ms, 'is_active', p_is_active)),
        jsonb_build_object('rule_id', v_row.rule_id, 'definition', v_row.normalized_definition),
        'ok',
        round(extract(epoch FROM clock_timestamp() - v_t0)::numeric * 1000, 3));
    RETURN v_row;
END;
$$;


------------------------------------------------------------------------------------------------------
-- The console's view: latest result per rule with the trend of its recent runs
------------------------------------------------------------------------------------------------------
CREATE OR REPLACE VIEW dq_latest_results AS
SELECT d.rule_id,
       d.rule_name,
       d.table_name,
       d.rule_type,
       d.severity,
       d.threshold_value,
       d.is_active,
       d.normalized_definition AS definition,
       l.run_id AS last_run_id,
       l.check_timestamp AS last_checked_at,
       l.status AS last_status,
       l.status IN ('pass', 'warn') AS last_passed,
       round(l.metric_value, 4) AS last_score,
       l.message AS last_message,
       t.previous_score,
       round(l.metric_value, 4) - t.previous_score AS score_change,
       t.recent_scores,
       t.recent_statuses,
       t.recent_pass_rate
FROM dq_rule_definitions d
LEFT JOIN LATERAL (
    SELECT m.run_id, m.check_timestamp, m.status, m.metric_value, m.message
    FROM data_quality_metrics m
    WHERE m.rule_id = d.rule_id
    ORDER BY m.metric_id DESC
    LIMIT 1
) l ON true
LEFT JOIN LATERAL (
    SELECT array_agg(round(h.metric_value, 4) ORDER BY h.metric_id) AS recent_scores,
           array_agg(h.status::text ORDER BY h.metric_id) AS recent_statuses,
           round(avg(CASE WHEN h.status IN ('pass', 'warn') THEN 1 ELSE 0 END), 4) AS recent_pass_rate,
           (array_agg(round(h.metric_value, 4) ORDER BY h.metric_id DESC))[2] AS previous_score
    FROM (SELECT m.metric_id, m.metric_value, m.status
          FROM data_quality_metrics m
          WHERE m.rule_id = d.rule_id
          ORDER BY m.metric_id DESC
          LIMIT 10) h
) t ON true;
COMMENT ON VIEW dq_latest_results IS
    'One row per DQ rule: its latest result and the trend of its last 10 results (oldest first).';


------------------------------------------------------------------------------------------------------
-- validate_data_quality: ad-hoc checks of one table, rules given as JSON
------------------------------------------------------------------------------------------------------
-- p_validation_rules keys (unknown keys give status SKIP):
--   not_null_check: "col" or ["col", ...]        one row per column, rows where it IS NULL
--   unique_check:   "col" or ["col", ...]        one row; the list is one composite key; affected_rows =
--                                                rows whose non-NULL key occurs more than once
--   range_check:    {"column": c, "min": x, "max": y} (either bound optional), or
--                   {"expression": "..."} / "..." (a boolean expression, validated like rule
--                   expressions), or an array of these; rows outside the range / where it is false.
--                   NULLs are not out of range: that is what not_null_check is for.
-- An unknown table or column, a bad value or a rejected expression raises an error naming it.
-- Runs as the caller (SECURITY INVOKER): it reads only what the caller may read.
CREATE OR REPLACE FUNCTION validate_data_quality(p_table_name varchar(100), p_validation_rules jsonb)
RETURNS TABLE(
    rule_name varchar(100),
    status varchar(20),
    message text,
    affected_rows integer
)
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_rel regclass;
    v_rule record;
    v_cols text[];
    v_counts bigint[];
    v_item jsonb;
    v_pred text;
    v_label text;
    v_n bigint;
    v_groups bigint;
    i integer;
BEGIN
    IF p_validation_rules IS NULL OR jsonb_typeof(p_validation_rules) <> 'object' THEN
        RAISE EXCEPTION 'validation rules must be a JSON object, e.g. {"not_null_check": "email"}'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_rel := dq_resolve_table(p_table_name);

    FOR v_rule IN SELECT e.key, e.value FROM jsonb_each(p_validation_rules) AS e LOOP
        rule_name := left(v_rule.key, 100);
        CASE v_rule.key
        WHEN 'not_null_check', 'unique_check' THEN
            IF jsonb_typeof(v_rule.value) = 'string' THEN
                v_cols := ARRAY[dq_require_column(v_rel, v_rule.value #>> '{}')];
            ELSIF (CASE WHEN jsonb_typeof(v_rule.value) = 'array'
                        THEN jsonb_array_length(v_rule.value) > 0
                             AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(v_rule.value) e(v)
                                             WHERE jsonb_typeof(e.v) <> 'string')
                        ELSE false END) THEN
                v_cols := ARRAY(SELECT dq_require_column(v_rel, e.v) FROM jsonb_array_elements_text(v_rule.value)
                                WITH ORDINALITY AS e(v, i) ORDER BY e.i);
            ELSE
                RAISE EXCEPTION '% takes a column name or an array of column names', v_rule.key
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;

            IF v_rule.key = 'not_null_check' THEN
                -- All columns in one scan.
                EXECUTE format('SELECT ARRAY[%s]::bigint[] FROM %s',
                               (SELECT string_agg(format('count(*) FILTER (WHERE %I IS NULL)', c), ', ' ORDER BY i)
                                FROM unnest(v_cols) WITH ORDINALITY AS u(c, i)),
                               dq_qualified(v_rel))
                INTO v_counts;
                FOR i IN 1 .. cardinality(v_cols) LOOP
                    status := CASE WHEN v_counts[i] = 0 THEN 'PASS' ELSE 'FAIL' END;
                    message := format('Found %s null values in %s', v_counts[i], v_cols[i]);
                    affected_rows := least(v_counts[i], 2147483647);
                    RETURN NEXT;
                END LOOP;
            ELSE
                EXECUTE format(
                    'SELECT count(*), coalesce(sum(d.n), 0) FROM (SELECT count(*) AS n FROM %s WHERE %s GROUP BY %s HAVING count(*) > 1) AS d',
                    dq_qualified(v_rel),
                    (SELECT string_agg(format('%I IS NOT NULL', c), ' AND ') FROM unnest(v_cols) AS u(c)),
                    (SELECT string_agg(format('%I', c), ', ') FROM unnest(v_cols) AS u(c)))
                INTO v_groups, v_n;
                status := CASE WHEN v_groups = 0 THEN 'PASS' ELSE 'FAIL' END;
                message := format('Found %s duplicate values in (%s), in %s rows', v_groups,
                                  array_to_string(v_cols, ', '), v_n);
                affected_rows := least(v_n, 2147483647);
                RETURN NEXT;
            END IF;

        WHEN 'range_check' THEN
            FOR v_item IN
                SELECT e.v FROM jsonb_array_elements(
                    CASE WHEN jsonb_typeof(v_rule.value) = 'array' THEN v_rule.value
                         ELSE jsonb_build_array(v_rule.value) END) WITH ORDINALITY AS e(v, i)
                ORDER BY e.i
            LOOP
                IF jsonb_typeof(v_item) = 'string' THEN
                    v_item := jsonb_build_object('expression', v_item);
                END IF;
                IF jsonb_typeof(v_item) <> 'object' THEN
                    RAISE EXCEPTION 'range_check takes {"column": .., "min": .., "max": ..}, {"expression": ".."} or an array of them'
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
                IF EXISTS (SELECT 1 FROM jsonb_object_keys(v_item) k WHERE k NOT IN ('column', 'min', 'max', 'expression')) THEN
                    RAISE EXCEPTION 'range_check accepts only the keys column, min, max and expression'
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
                IF v_item ? 'expression' THEN
                    IF v_item ?| ARRAY['column', 'min', 'max'] OR jsonb_typeof(v_item -> 'expression') <> 'string' THEN
                        RAISE EXCEPTION 'range_check: give either an expression (a string) or column/min/max'
                            USING ERRCODE = 'invalid_parameter_value';
                    END IF;
                    v_pred := dq_validated_predicate(v_rel, v_item ->> 'expression');
                    v_label := v_pred;
                ELSE
                    IF jsonb_typeof(v_item -> 'column') IS DISTINCT FROM 'string'
                       OR NOT (v_item ?| ARRAY['min', 'max'])
                       OR jsonb_typeof(v_item -> 'min') IN ('object', 'array', 'null')
                       OR jsonb_typeof(v_item -> 'max') IN ('object', 'array', 'null') THEN
                        RAISE EXCEPTION 'range_check needs "column" and a scalar "min" and/or "max"'
                            USING ERRCODE = 'invalid_parameter_value';
                    END IF;
                    v_pred := concat_ws(' AND ',
                        CASE WHEN v_item ? 'min' THEN dq_structured_predicate(v_rel, v_item ->> 'column', '>=', v_item -> 'min') END,
                        CASE WHEN v_item ? 'max' THEN dq_structured_predicate(v_rel, v_item ->> 'column', '<=', v_item -> 'max') END);
                    PERFORM dq_assert_parses(dq_predicate_pass_sql(v_rel, ARRAY[v_pred]));
                    v_label := format('%s in [%s, %s]', dq_require_column(v_rel, v_item ->> 'column'),
                                      coalesce(v_item ->> 'min', '-inf'), coalesce(v_item ->> 'max', '+inf'));
                END IF;
                -- v_pred is validator output, never the caller's text.
                EXECUTE format('SELECT count(*) FROM %s WHERE NOT (%s)', dq_qualified(v_rel), v_pred) INTO v_n;
                status := CASE WHEN v_n = 0 THEN 'PASS' ELSE 'FAIL' END;
                message := format('Found %s values outside range (%s)', v_n, v_label);
                affected_rows := least(v_n, 2147483647);
                RETURN NEXT;
            END LOOP;

        ELSE
            status := 'SKIP';
            message := 'Unknown rule type';
            affected_rows := 0;
            RETURN NEXT;
        END CASE;
    END LOOP;
END;
$$;
