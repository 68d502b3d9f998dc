-- 0026: the fraud score is computed for a whole chunk in one call (financial_fraud_scores in
-- sql/definitions/30_pipeline.sql). The one-row form it replaces goes, so the formula has one
-- definition; detect_fraud_indicators now calls the set form with one row.
SET lock_timeout = '5s';
SET statement_timeout = '1min';

DROP FUNCTION IF EXISTS financial_fraud_score(numeric, timestamptz, bigint, numeric, text, integer, integer);
