-- Batches: a file of requests run as one row job each, and the files they come from
-- and write to. A batch's rows are ordinary jobs with batch_id, custom_id and
-- batch_line set.
ALTER TABLE jobs ADD COLUMN batch_id TEXT;
ALTER TABLE jobs ADD COLUMN custom_id TEXT;
ALTER TABLE jobs ADD COLUMN batch_line INTEGER;

-- A batch's rows in line order (paging its output, custom_id checks, deletion).
CREATE INDEX jobs_batch_line ON jobs (tenant, batch_id, batch_line) WHERE batch_id IS NOT NULL;
-- A batch's rows by state, covering its token columns: batch_counts reads only this
-- index, and release_rows and finish_rows find their rows without a scan.
CREATE INDEX jobs_batch_state
    ON jobs (tenant, batch_id, state, prompt_tokens, completion_tokens, cached_tokens)
    WHERE batch_id IS NOT NULL;

-- Uploaded and produced files (OpenAI files) and datasets (Fireworks).
CREATE TABLE files (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,  -- creation order, for keyset pagination
    tenant     TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    purpose    TEXT    NOT NULL,
    filename   TEXT    NOT NULL,
    bytes      INTEGER NOT NULL,
    status     TEXT    NOT NULL,
    meta       TEXT    NOT NULL DEFAULT '{}',
    created_at REAL    NOT NULL,
    UNIQUE (tenant, id)
);
CREATE INDEX files_listing ON files (tenant, kind, seq);
CREATE INDEX files_created ON files (created_at);

-- Batches: the columns the store selects on, and every other field of a Batch in data.
CREATE TABLE batches (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,  -- creation order
    tenant           TEXT    NOT NULL,
    id               TEXT    NOT NULL,
    dialect          TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    idempotency_key  TEXT,
    owner            TEXT,
    lease_expires_at REAL,
    created_at       REAL    NOT NULL,
    data             TEXT    NOT NULL,
    UNIQUE (tenant, id)
);
CREATE UNIQUE INDEX batches_idempotency ON batches (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX batches_listing ON batches (tenant, seq);
-- get_batch across tenants (the runner, the operator's CLI).
CREATE INDEX batches_id ON batches (id);
-- The batches the runner still has to look after.
CREATE INDEX batches_open ON batches (seq)
    WHERE state NOT IN ('succeeded', 'failed', 'cancelled', 'expired');
