-- The schema as declared: what replaying every migration must produce
-- (tests/contract/test_migrations.py checks it). Change it together with a new migration.

-- Jobs are the unit a client submits and a worker leases. The rows of a batch are jobs
-- with batch_id, custom_id and batch_line (from 1) set: those three columns come last,
-- written as ALTER TABLE (migration 0002) leaves them.
CREATE TABLE jobs (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,  -- monotonic submission order
    id                TEXT    NOT NULL UNIQUE,
    tenant            TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    origin            TEXT    NOT NULL,
    service_class     INTEGER NOT NULL,
    priority          INTEGER NOT NULL,
    state             TEXT    NOT NULL,
    request           TEXT    NOT NULL,
    info              TEXT    NOT NULL DEFAULT '{}',
    inputs            TEXT,
    result            TEXT,
    error             TEXT,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens     INTEGER NOT NULL DEFAULT 0,
    attempt           INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL,
    owner             TEXT,
    lease_expires_at  REAL,
    created_at        REAL    NOT NULL,
    claimed_at        REAL,
    finished_at       REAL,
    deadline_at       REAL
, batch_id TEXT, custom_id TEXT, batch_line INTEGER);

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
CREATE INDEX jobs_batch_state
    ON jobs (tenant, batch_id, state, prompt_tokens, completion_tokens, cached_tokens)
    WHERE batch_id IS NOT NULL;

CREATE TABLE api_keys (
    id         TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    tenant     TEXT    NOT NULL,
    prefix     TEXT    NOT NULL,
    key_hash   TEXT    NOT NULL UNIQUE,
    admin      INTEGER NOT NULL DEFAULT 0,
    created_at REAL    NOT NULL,
    revoked_at REAL
);

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
