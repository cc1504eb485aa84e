-- The schema as declared: what replaying every migration must produce
-- (tests/contract/test_migrations.py checks it). Change it together with a new migration.

-- Jobs are the unit a client submits and a worker leases. The rows of a batch are jobs
-- with batch_id, custom_id and batch_line (from 1) set.
CREATE TABLE jobs (
    seq               BIGSERIAL PRIMARY KEY,  -- monotonic submission order
    id                TEXT             NOT NULL UNIQUE,
    tenant            TEXT             NOT NULL,
    model             TEXT             NOT NULL,
    origin            TEXT             NOT NULL,
    service_class     SMALLINT         NOT NULL,
    priority          INTEGER          NOT NULL,
    state             TEXT             NOT NULL,
    request           JSONB            NOT NULL,
    info              JSONB            NOT NULL DEFAULT '{}',
    inputs            JSONB,
    result            JSONB,
    error             JSONB,
    prompt_tokens     INTEGER          NOT NULL DEFAULT 0,
    completion_tokens INTEGER          NOT NULL DEFAULT 0,
    cached_tokens     INTEGER          NOT NULL DEFAULT 0,
    attempt           INTEGER          NOT NULL DEFAULT 0,
    max_attempts      INTEGER          NOT NULL,
    owner             TEXT,
    lease_expires_at  DOUBLE PRECISION,
    created_at        DOUBLE PRECISION NOT NULL,
    claimed_at        DOUBLE PRECISION,
    finished_at       DOUBLE PRECISION,
    deadline_at       DOUBLE PRECISION,
    batch_id          TEXT,
    custom_id         TEXT,
    batch_line        INTEGER
);

-- The claim walks this index in scheduling order.
CREATE INDEX jobs_claimable ON jobs (service_class, priority DESC, seq) WHERE state = 'queued';
-- Re-claiming expired leases and finding overdue work.
CREATE INDEX jobs_running_lease ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_deadline ON jobs (deadline_at)
    WHERE deadline_at IS NOT NULL AND state IN ('queued', 'running');
CREATE INDEX jobs_tenant_model_state ON jobs (tenant, model, state);
-- A batch's rows in line order (paging its output, custom_id checks, deletion).
CREATE INDEX jobs_batch_line ON jobs (tenant, batch_id, batch_line) WHERE batch_id IS NOT NULL;
-- A batch's rows by state, covering its token columns: batch_counts reads only this
-- index, and release_rows and finish_rows find their rows without a scan.
CREATE INDEX jobs_batch_state ON jobs (tenant, batch_id, state)
    INCLUDE (prompt_tokens, completion_tokens, cached_tokens)
    WHERE batch_id IS NOT NULL;

CREATE TABLE api_keys (
    id         TEXT             PRIMARY KEY,
    name       TEXT             NOT NULL UNIQUE,
    tenant     TEXT             NOT NULL,
    prefix     TEXT             NOT NULL,
    key_hash   TEXT             NOT NULL UNIQUE,
    admin      BOOLEAN          NOT NULL DEFAULT FALSE,
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION
);

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

-- Wake idle workers in every process when work arrives (one notice per statement).
CREATE FUNCTION inferq_notify_submitted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('inferq_submitted', '');
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_submitted AFTER INSERT ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION inferq_notify_submitted();

-- Tell waiters (sync requests) and workers (cancel, expiry) in every process that a
-- job ended; the payload is the job id, the outcome is read from the table. Nobody waits
-- on a batch row that ends before it runs: finishing a batch's queued rows (cancel,
-- expiry) sends no notice per row, while a running row's end still tells its worker.
CREATE FUNCTION inferq_notify_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('inferq_ended', NEW.id);
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_ended AFTER UPDATE OF state ON jobs
    FOR EACH ROW
    WHEN (NEW.state IN ('succeeded', 'failed', 'cancelled', 'expired')
          AND OLD.state IS DISTINCT FROM NEW.state
          AND (NEW.batch_id IS NULL OR OLD.state = 'running'))
    EXECUTE FUNCTION inferq_notify_ended();

-- Blobs (the bytes of files, datasets and outputs) in the database, so that a fleet needs
-- no shared volume: inferq.blobs.postgres. A blob is a name pointing at one upload; an
-- upload is a run of chunks of at most 1 MiB. A writer fills an upload that no name points
-- at, then swaps the name to it in one transaction, so a reader sees the old bytes or the
-- new ones, never a part.
CREATE TABLE blobs (
    key        TEXT             PRIMARY KEY,
    upload_id  TEXT             NOT NULL,
    size       BIGINT           NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);

-- Uploads no name points at: one being written (touched at every chunk), or one a
-- replace or delete retired (kept a while for the reads still streaming it). Those
-- untouched for an hour are deleted with their chunks (a crashed writer's, old bytes).
CREATE TABLE blob_uploads (
    id         TEXT             PRIMARY KEY,
    touched_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX blob_uploads_touched ON blob_uploads (touched_at);

CREATE TABLE blob_chunks (
    upload_id TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    data      BYTEA   NOT NULL,
    PRIMARY KEY (upload_id, seq)
);
