-- Webhooks: a tenant's endpoints, the outbox written with each terminal change of a job
-- or batch (by the triggers below, in the change's own transaction), and the deliveries
-- the outbox fans out to (one per endpoint and event; its id is every attempt's
-- webhook-id).
CREATE TABLE webhook_endpoints (
    id         TEXT             PRIMARY KEY,
    tenant     TEXT             NOT NULL,
    url        TEXT             NOT NULL,
    events     JSONB            NOT NULL DEFAULT '[]',
    secret     TEXT             NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant);

CREATE TABLE webhook_outbox (
    seq        BIGSERIAL        PRIMARY KEY,
    id         TEXT             NOT NULL UNIQUE,
    tenant     TEXT             NOT NULL,
    source     TEXT             NOT NULL,
    subject_id TEXT             NOT NULL,
    origin     TEXT             NOT NULL,
    state      TEXT             NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE webhook_deliveries (
    seq              BIGSERIAL        PRIMARY KEY,
    id               TEXT             NOT NULL UNIQUE,
    endpoint_id      TEXT             NOT NULL,
    tenant           TEXT             NOT NULL,
    event_id         TEXT             NOT NULL,
    event_type       TEXT             NOT NULL,
    subject_id       TEXT             NOT NULL,
    event_at         DOUBLE PRECISION NOT NULL,
    state            TEXT             NOT NULL,
    attempts         INTEGER          NOT NULL DEFAULT 0,
    next_at          DOUBLE PRECISION NOT NULL,
    owner            TEXT,
    lease_expires_at DOUBLE PRECISION,
    last_at          DOUBLE PRECISION,
    last_status      INTEGER,
    last_error       TEXT,
    delivered_at     DOUBLE PRECISION,
    UNIQUE (event_id, endpoint_id)
);
-- The deliverers' claim: pending deliveries by when they are due.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE state = 'pending';
-- An endpoint's history, newest first.
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, seq);

-- A queue job (not a sync request, not a batch row) ended.
CREATE FUNCTION inferq_webhook_job_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM webhook_endpoints WHERE tenant = NEW.tenant) THEN
        INSERT INTO webhook_outbox (id, tenant, source, subject_id, origin, state, created_at)
        VALUES ('evt_' || substr(md5(random()::text || clock_timestamp()::text), 1, 24),
                NEW.tenant, 'job', NEW.id, NEW.origin, NEW.state,
                extract(epoch FROM clock_timestamp()));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER webhook_job_ended AFTER UPDATE OF state ON jobs
    FOR EACH ROW
    WHEN (NEW.state IN ('succeeded', 'failed', 'cancelled', 'expired')
          AND OLD.state NOT IN ('succeeded', 'failed', 'cancelled', 'expired')
          AND NEW.batch_id IS NULL AND NEW.service_class > 0)
    EXECUTE FUNCTION inferq_webhook_job_ended();

-- A batch (or a document workflow job) ended.
CREATE FUNCTION inferq_webhook_batch_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM webhook_endpoints WHERE tenant = NEW.tenant) THEN
        INSERT INTO webhook_outbox (id, tenant, source, subject_id, origin, state, created_at)
        VALUES ('evt_' || substr(md5(random()::text || clock_timestamp()::text), 1, 24),
                NEW.tenant, 'batch', NEW.id, NEW.dialect, NEW.state,
                extract(epoch FROM clock_timestamp()));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER webhook_batch_ended AFTER UPDATE OF state ON batches
    FOR EACH ROW
    WHEN (NEW.state IN ('succeeded', 'failed', 'cancelled', 'expired')
          AND OLD.state NOT IN ('succeeded', 'failed', 'cancelled', 'expired'))
    EXECUTE FUNCTION inferq_webhook_batch_ended();
