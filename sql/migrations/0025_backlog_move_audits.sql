-- 0025: backlog_move (the mover behind park_dead_letters and unpark_dead_letters) now writes the
-- action's audit row itself and takes the reason, so its signature changes; the repeatable definitions
-- create the new one after this drops the old (CREATE OR REPLACE cannot change a parameter list).
SET lock_timeout = '5s';
SET statement_timeout = '1min';

DROP FUNCTION IF EXISTS backlog_move(text, text, bigint[], text);
