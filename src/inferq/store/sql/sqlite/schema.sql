-- The schema as declared: what replaying every migration must produce
-- (tests/contract/test_migrations.py checks it). Change it together with a new migration.

-- Jobs are the unit a client submits and a worker leases.
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
);

-- The claim walks this index in scheduling order.
CREATE INDEX jobs_claimable ON jobs (service_class, priority DESC, seq) WHERE state = 'queued';
-- Re-claiming expired leases and finding overdue work.
CREATE INDEX jobs_running_lease ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_deadline ON jobs (deadline_at)
    WHERE deadline_at IS NOT NULL AND state IN ('queued', 'running');
CREATE INDEX jobs_tenant_model_state ON jobs (tenant, model, state);

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
