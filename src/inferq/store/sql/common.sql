-- Named queries whose SQL is the same for SQLite and PostgreSQL. Parameters are :named.
-- load_queries gives each store these and the ones of its own <dialect>/queries.sql,
-- which may not use a name that is here.

-- jobs --------------------------------------------------------------------------------

-- name: ping
SELECT 1 AS ok;

-- name: requeue
-- preemption: back to the queue, the attempt not counted
UPDATE jobs
SET state = 'queued', attempt = attempt - 1, owner = NULL, lease_expires_at = NULL,
    claimed_at = NULL
WHERE id = :id AND owner = :owner AND attempt = :attempt AND state = 'running';

-- name: cancel_queued
-- A batch's rows are cancelled with their batch, never by model.
UPDATE jobs SET state = 'cancelled', finished_at = :now
WHERE tenant = :tenant AND model = :model AND state = 'queued' AND batch_id IS NULL
RETURNING *;

-- name: delete_job
DELETE FROM jobs WHERE id = :id AND tenant = :tenant AND batch_id IS NULL;

-- files -------------------------------------------------------------------------------

-- name: get_file
SELECT * FROM files WHERE tenant = :tenant AND id = :id;

-- name: delete_file
DELETE FROM files WHERE tenant = :tenant AND id = :id;

-- batches and their rows --------------------------------------------------------------

-- name: find_batch_by_key
SELECT * FROM batches WHERE tenant = :tenant AND idempotency_key = :idempotency_key;

-- name: lease_batch
-- Free, already ours, or expired: then ours until :until.
UPDATE batches SET owner = :owner, lease_expires_at = :until
WHERE tenant = :tenant AND id = :id
  AND state NOT IN ('succeeded', 'failed', 'cancelled', 'expired')
  AND (owner IS NULL OR owner = :owner OR lease_expires_at IS NULL OR lease_expires_at < :now);

-- name: count_open_batches
-- Document workflow jobs (dialect 'unstructured') have a limit of their own.
SELECT COUNT(*) AS n FROM batches
WHERE tenant = :tenant AND dialect <> 'unstructured'
  AND state NOT IN ('succeeded', 'failed', 'cancelled', 'expired');

-- name: delete_batch
DELETE FROM batches WHERE tenant = :tenant AND id = :id;

-- name: delete_batch_rows
DELETE FROM jobs WHERE tenant = :tenant AND batch_id = :batch_id;

-- name: batch_counts
-- One pass over the jobs_batch_state index; the store folds states into BatchCounts.
SELECT state, COUNT(*) AS n, SUM(prompt_tokens) AS prompt_tokens,
       SUM(completion_tokens) AS completion_tokens, SUM(cached_tokens) AS cached_tokens
FROM jobs
WHERE tenant = :tenant AND batch_id = :batch_id
GROUP BY state;

-- name: duplicate_custom_ids
SELECT COALESCE(custom_id, '') AS custom_id, MIN(batch_line) AS first_line,
       MAX(batch_line) AS later_line
FROM jobs
WHERE tenant = :tenant AND batch_id = :batch_id
GROUP BY COALESCE(custom_id, '')
HAVING COUNT(*) > 1
ORDER BY first_line
LIMIT :limit;

-- API keys ----------------------------------------------------------------------------

-- name: insert_key
INSERT INTO api_keys (id, name, tenant, prefix, key_hash, admin, created_at, rpm, tpm)
VALUES (:id, :name, :tenant, :prefix, :key_hash, :admin, :created_at, :rpm, :tpm);

-- name: find_key
SELECT * FROM api_keys WHERE key_hash = :key_hash;

-- name: list_keys
SELECT * FROM api_keys ORDER BY created_at;

-- name: revoke_key
UPDATE api_keys SET revoked_at = COALESCE(revoked_at, :now)
WHERE id = :key OR name = :key
RETURNING *;

-- nodes (inferq.core.nodes) -----------------------------------------------------------

-- name: insert_node
INSERT INTO nodes (id, name, prefix, token_hash, created_at)
VALUES (:id, :name, :prefix, :token_hash, :created_at);

-- name: find_node
SELECT * FROM nodes WHERE token_hash = :token_hash;

-- name: list_nodes
SELECT * FROM nodes ORDER BY created_at;

-- name: revoke_node
UPDATE nodes SET revoked_at = COALESCE(revoked_at, :now)
WHERE id = :node OR name = :node
RETURNING *;

-- fair share (core/fairness.py, store/fair.py) ----------------------------------------

-- name: set_tenant_weight
INSERT INTO tenants (tenant, weight) VALUES (:tenant, :weight)
ON CONFLICT (tenant) DO UPDATE SET weight = :weight
RETURNING *;

-- name: list_tenants
SELECT * FROM tenants ORDER BY tenant;

-- request and token limits (core/limits.py, store/sql_limits.py) ----------------------

-- name: tenant_limits
SELECT rpm, tpm FROM tenants WHERE tenant = :tenant;

-- name: set_tenant_limits
INSERT INTO tenants (tenant, rpm, tpm) VALUES (:tenant, :rpm, :tpm)
ON CONFLICT (tenant) DO UPDATE SET rpm = :rpm, tpm = :tpm;

-- name: set_key_limits
UPDATE api_keys SET rpm = :rpm, tpm = :tpm
WHERE id = :key OR name = :key
RETURNING *;

-- name: put_bucket
UPDATE rate_buckets SET full_at = :full_at WHERE subject = :subject;

-- webhooks ----------------------------------------------------------------------------

-- name: delete_webhook_deliveries
DELETE FROM webhook_deliveries WHERE endpoint_id = :id;

-- name: webhook_outbox
SELECT * FROM webhook_outbox ORDER BY seq LIMIT :limit;

-- name: insert_webhook_delivery
INSERT INTO webhook_deliveries
    (id, endpoint_id, tenant, event_id, event_type, subject_id, event_at, state, next_at)
VALUES (:id, :endpoint_id, :tenant, :event_id, :event_type, :subject_id, :event_at,
        'pending', :next_at)
ON CONFLICT (event_id, endpoint_id) DO NOTHING;

-- name: delete_webhook_outbox_entry
DELETE FROM webhook_outbox WHERE seq = :seq;

-- name: claimed_webhook_deliveries
SELECT d.*, e.url, e.secret
FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
WHERE d.owner = :owner AND d.lease_expires_at = :until AND d.state = 'pending'
ORDER BY d.next_at;

-- retention ---------------------------------------------------------------------------

-- name: purge_jobs
-- Jobs (not batch rows) that ended before :cutoff; a workflow's node jobs only while
-- their tenant has no open workflow job.
DELETE FROM jobs WHERE id IN (
    SELECT j.id FROM jobs j
    WHERE j.batch_id IS NULL AND j.finished_at IS NOT NULL AND j.finished_at < :cutoff
      AND j.state IN ('succeeded', 'failed', 'cancelled', 'expired')
      AND NOT (j.origin = :workflow_origin AND EXISTS (
          SELECT 1 FROM batches b
          WHERE b.tenant = j.tenant AND b.dialect = :workflow_origin
            AND b.state NOT IN ('succeeded', 'failed', 'cancelled', 'expired')))
    ORDER BY j.finished_at LIMIT :limit
);

-- name: purge_batch_rows
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs WHERE tenant = :tenant AND batch_id = :batch_id LIMIT :limit
);
