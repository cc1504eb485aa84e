-- Batches: a file of requests run as one row job each, and the files they come from
-- and write to. A batch's rows are ordinary jobs with batch_id, custom_id and
-- batch_line set.
ALTER TABLE jobs
    ADD COLUMN batch_id   TEXT,
    ADD COLUMN custom_id  TEXT,
    ADD COLUMN batch_line INTEGER;

-- A batch's rows in line order (paging its output, custom_id checks, deletion).
CREATE INDEX jobs_batch_line ON jobs (tenant, batch_id, batch_line) WHERE batch_id IS NOT NULL;
-- A batch's rows by state, covering its token columns: batch_counts reads only this
-- index, and release_rows and finish_rows find their rows without a scan.
CREATE INDEX jobs_batch_state ON jobs (tenant, batch_id, state)
    INCLUDE (prompt_tokens, completion_tokens, cached_tokens)
    WHERE batch_id IS NOT NULL;

-- Uploaded and produced files (OpenAI files) and datasets (Fireworks).
CREATE TABLE files (
    tenant     TEXT             NOT NULL,
    id         TEXT             NOT NULL,
    seq        BIGSERIAL,  -- creation order, for keyset pagination
    kind       TEXT             NOT NULL,
    purpose    TEXT             NOT NULL,
    filename   TEXT             NOT NULL,
    bytes      BIGINT           NOT NULL,
    status     TEXT             NOT NULL,
    meta       JSONB            NOT NULL DEFAULT '{}',
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX files_listing ON files (tenant, kind, seq);
CREATE INDEX files_created ON files (created_at);

-- Batches: the columns the store selects on, and every other field of a Batch in data.
CREATE TABLE batches (
    tenant           TEXT             NOT NULL,
    id               TEXT             NOT NULL,
    seq              BIGSERIAL,  -- creation order
    dialect          TEXT             NOT NULL,
    state            TEXT             NOT NULL,
    idempotency_key  TEXT,
    owner            TEXT,
    lease_expires_at DOUBLE PRECISION,
    created_at       DOUBLE PRECISION NOT NULL,
    data             JSONB            NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE UNIQUE INDEX batches_idempotency ON batches (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX batches_listing ON batches (tenant, seq);
-- get_batch across tenants (the runner, the operator's CLI).
CREATE INDEX batches_id ON batches (id);
-- The batches the runner still has to look after.
CREATE INDEX batches_open ON batches (seq)
    WHERE state NOT IN ('succeeded', 'failed', 'cancelled', 'expired');

-- Nobody waits on a batch row that ends before it runs: finishing a batch's queued rows
-- (cancel, expiry) sends no notice per row. A running row's end still tells its worker.
DROP TRIGGER jobs_ended ON jobs;
CREATE TRIGGER jobs_ended AFTER UPDATE OF state ON jobs
    FOR EACH ROW
    WHEN (NEW.state IN ('succeeded', 'failed', 'cancelled', 'expired')
          AND OLD.state IS DISTINCT FROM NEW.state
          AND (NEW.batch_id IS NULL OR OLD.state = 'running'))
    EXECUTE FUNCTION inferq_notify_ended();
