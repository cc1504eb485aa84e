-- Tenants sharing one queue: each tenant's weight and virtual time (the claim's fair
-- order, core/fairness.py), and request and token limits (core/limits.py).
CREATE TABLE tenants (
    tenant   TEXT    PRIMARY KEY,
    -- the tenant's share of the engines against other waiting tenants (default 1)
    weight   REAL    NOT NULL DEFAULT 1,
    -- tokens charged to the tenant divided by its weight (the claim serves the lowest)
    vtime    REAL    NOT NULL DEFAULT 0,
    -- the tokens one of its jobs has cost lately (0: not known yet)
    avg_cost REAL    NOT NULL DEFAULT 0,
    -- requests and tokens per minute for all the tenant's keys together (NULL: none)
    rpm      INTEGER,
    tpm      INTEGER
);

-- A key's own limits (NULL: the server's defaults).
ALTER TABLE api_keys ADD COLUMN rpm INTEGER;
ALTER TABLE api_keys ADD COLUMN tpm INTEGER;

-- Rate buckets (GCRA): the time at which a subject ('key:<id>' or 'tenant:<name>', one
-- per limit) would be back to a full minute's allowance.
CREATE TABLE rate_buckets (
    subject  TEXT    PRIMARY KEY,
    full_at  REAL    NOT NULL
);

-- The fair claim reads each waiting tenant's best jobs from this index.
CREATE INDEX jobs_fair ON jobs (tenant, service_class, priority DESC, seq) WHERE state = 'queued';
