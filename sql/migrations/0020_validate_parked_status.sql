-- 0020: validate the widened processing_status check that 0019 added NOT VALID. In its own
-- transaction, so the scan holds only SHARE UPDATE EXCLUSIVE: loaders and claims go on meanwhile
-- (validating in 0019's transaction would have kept its ACCESS EXCLUSIVE lock for the whole scan).
SET lock_timeout = '5s';
SET statement_timeout = '30min';

ALTER TABLE financial_transactions_staging
    VALIDATE CONSTRAINT financial_transactions_staging_processing_status_check;
