-- Retention: when a file expires (OpenAI's expires_after on uploads, output_expires_after
-- on a batch's outputs) is kept in its meta; this column reads it out, for the sweeper's
-- index.
ALTER TABLE files ADD COLUMN expires_at REAL
    GENERATED ALWAYS AS (json_extract(meta, '$.expires_at')) VIRTUAL;
CREATE INDEX files_expiry ON files (expires_at) WHERE expires_at IS NOT NULL;
-- Finished jobs that are not batch rows, by when they ended (kept INFERQ_RETENTION_DAYS).
CREATE INDEX jobs_finished ON jobs (finished_at)
    WHERE batch_id IS NULL AND finished_at IS NOT NULL;
