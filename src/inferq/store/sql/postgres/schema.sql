-- The schema as declared: what replaying every migration must produce
-- (tests/contract/test_migrations.py checks it). Change it together with a new migration.

-- Jobs are the unit a client submits and a worker leases.
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
    deadline_at       DOUBLE PRECISION
);

-- The claim walks this index in scheduling order.
CREATE INDEX jobs_claimable ON jobs (service_class, priority DESC, seq) WHERE state = 'queued';
-- Re-claiming expired leases and finding overdue work.
CREATE INDEX jobs_running_lease ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_deadline ON jobs (deadline_at)
    WHERE deadline_at IS NOT NULL AND state IN ('queued', 'running');
CREATE INDEX jobs_tenant_model_state ON jobs (tenant, model, state);

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

-- Wake idle workers in every process when work arrives (one notice per statement).
CREATE FUNCTION inferq_notify_submitted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('inferq_submitted', '');
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_submitted AFTER INSERT ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION inferq_notify_submitted();

-- Tell waiters (sync requests) and workers (cancel, expiry) in every process that a
-- job ended; the payload is the job id, the outcome is read from the table.
CREATE FUNCTION inferq_notify_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('inferq_ended', NEW.id);
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_ended AFTER UPDATE OF state ON jobs
    FOR EACH ROW
    WHEN (NEW.state IN ('succeeded', 'failed', 'cancelled', 'expired')
          AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION inferq_notify_ended();
