-- Named queries of the SQLite store. Parameters are :named.

-- name: insert_job
-- Nothing (no seq) when a job has this id.
INSERT INTO jobs (id, tenant, model, origin, service_class, priority, state, request, info,
                  inputs, max_attempts, created_at, deadline_at, batch_id, custom_id,
                  batch_line)
VALUES (:id, :tenant, :model, :origin, :service_class, :priority, :state, :request, :info,
        :inputs, :max_attempts, :created_at, :deadline_at, :batch_id, :custom_id,
        :batch_line)
ON CONFLICT (id) DO NOTHING
RETURNING seq;

-- name: get_job
SELECT * FROM jobs WHERE id = :id AND (:tenant IS NULL OR tenant = :tenant);

-- name: list_jobs
SELECT * FROM jobs
WHERE (:tenant IS NULL OR tenant = :tenant)
  AND (:model IS NULL OR model = :model)
  AND (:states IS NULL OR state IN (SELECT value FROM json_each(:states)))
ORDER BY seq DESC
LIMIT :limit;

-- name: fail_exhausted_leases
-- Running jobs whose worker vanished after their last allowed attempt.
UPDATE jobs
SET state = 'failed',
    error = json_object('code', 'worker_lost', 'message',
        printf('the worker running attempt %d of %d stopped renewing its lease',
               attempt, max_attempts)),
    owner = NULL, lease_expires_at = NULL, finished_at = :now
WHERE state = 'running' AND lease_expires_at < :now AND attempt >= max_attempts;

-- name: claim
-- One statement: the best queued jobs and the expired leases, merged in scheduling
-- order. A re-claimed job keeps its priority and records why it was re-run. The fair
-- claim (store/fair.py) runs it with :queued false, for the expired leases alone; with
-- :rescue false it takes queued jobs alone (expired leases are looked for at most once a
-- second, after fail_exhausted_leases).
UPDATE jobs
SET state = 'running',
    owner = :owner,
    attempt = attempt + 1,
    lease_expires_at = :lease_until,
    claimed_at = :now,
    error = CASE WHEN state = 'running' THEN
        json_object('code', 'worker_lost', 'message',
            printf('the worker running attempt %d of %d stopped renewing its lease',
                   attempt, max_attempts))
        ELSE error END
WHERE seq IN (
    SELECT seq FROM (
        SELECT seq, service_class, priority FROM (
            SELECT seq, service_class, priority FROM jobs
            WHERE state = 'queued' AND :queued
              AND service_class <= :max_class
              AND (:models IS NULL OR model IN (SELECT value FROM json_each(:models)))
              AND (deadline_at IS NULL OR deadline_at > :now)
            ORDER BY service_class, priority DESC, seq
            LIMIT :limit)
        UNION ALL
        SELECT seq, service_class, priority FROM (
            SELECT seq, service_class, priority FROM jobs
            WHERE state = 'running' AND :rescue AND lease_expires_at < :now
              AND service_class <= :max_class
              AND (:models IS NULL OR model IN (SELECT value FROM json_each(:models)))
            ORDER BY service_class, priority DESC, seq
            LIMIT :limit)
    )
    ORDER BY service_class, priority DESC, seq
    LIMIT :limit
)
RETURNING *;

-- name: renew_leases
-- :ids, :owners and :attempts are JSON arrays, one lease at each position.
UPDATE jobs SET lease_expires_at = :until
FROM (SELECT i.value AS id, o.value AS owner, a.value AS attempt
      FROM json_each(:ids) AS i
      JOIN json_each(:owners) AS o ON o.key = i.key
      JOIN json_each(:attempts) AS a ON a.key = i.key) AS l
WHERE jobs.id = l.id AND jobs.owner = l.owner AND jobs.attempt = l.attempt
  AND jobs.state = 'running'
RETURNING jobs.id;

-- name: set_progress
UPDATE jobs SET info = json_patch(info, :info)
WHERE id = :id AND owner = :owner AND attempt = :attempt AND state = 'running';

-- name: complete
UPDATE jobs
SET state = 'succeeded', result = :result, info = json_patch(info, '{"progress":1}'),
    prompt_tokens = :prompt_tokens,
    completion_tokens = :completion_tokens, cached_tokens = :cached_tokens,
    owner = NULL, lease_expires_at = NULL, finished_at = :now
WHERE id = :id AND owner = :owner AND attempt = :attempt AND state = 'running';

-- name: fail
UPDATE jobs
SET state = CASE WHEN :retry AND attempt < max_attempts THEN 'queued' ELSE 'failed' END,
    finished_at = CASE WHEN :retry AND attempt < max_attempts THEN NULL ELSE :now END,
    error = :error, owner = NULL, lease_expires_at = NULL
WHERE id = :id AND owner = :owner AND attempt = :attempt AND state = 'running';

-- name: lock_job
-- finish reads the job before it changes it; the one writer makes a lock needless.
SELECT * FROM jobs WHERE id = :id AND (:tenant IS NULL OR tenant = :tenant);

-- name: finish
UPDATE jobs
SET state = :state, error = COALESCE(:error, error), owner = NULL, lease_expires_at = NULL,
    finished_at = :now
WHERE id = :id AND state NOT IN ('succeeded', 'failed', 'cancelled', 'expired')
RETURNING *;

-- name: expire_overdue
UPDATE jobs
SET state = 'expired',
    error = json_object('code', 'timeout', 'message', 'the job passed its deadline'),
    owner = NULL, lease_expires_at = NULL, finished_at = :now
WHERE deadline_at IS NOT NULL AND deadline_at <= :now AND state IN ('queued', 'running')
RETURNING id;

-- name: metrics
SELECT
    COALESCE(SUM(state = 'running'), 0) AS running,
    COALESCE(SUM(state = 'queued'), 0) AS waiting,
    COUNT(*) AS total
FROM jobs
WHERE tenant = :tenant AND (:model IS NULL OR model = :model);

-- name: count_active
-- The metrics gauges, every tenant (or one, for the console): one SELECT per state, so
-- each can use that state's index (the claim's and the lease's partial indexes, the
-- batch rows' one).
SELECT model, service_class, state, in_batch, COUNT(*) AS n FROM (
    SELECT model, service_class, state, (batch_id IS NOT NULL) AS in_batch
    FROM jobs WHERE state = 'queued' AND (:tenant IS NULL OR tenant = :tenant)
    UNION ALL
    SELECT model, service_class, state, (batch_id IS NOT NULL) AS in_batch
    FROM jobs WHERE state = 'running' AND (:tenant IS NULL OR tenant = :tenant)
    UNION ALL
    SELECT model, service_class, state, (batch_id IS NOT NULL) AS in_batch
    FROM jobs WHERE state = 'validating' AND (:tenant IS NULL OR tenant = :tenant)
) AS active
GROUP BY model, service_class, state, in_batch;

-- name: insert_file
INSERT INTO files (tenant, id, kind, purpose, filename, bytes, status, meta, created_at)
VALUES (:tenant, :id, :kind, :purpose, :filename, :bytes, :status, :meta, :created_at)
ON CONFLICT (tenant, id) DO NOTHING
RETURNING seq;

-- name: list_files
-- Newest first, after the record :after (none when that record does not exist).
SELECT * FROM files
WHERE tenant = :tenant AND kind = :kind
  AND (:purpose IS NULL OR purpose = :purpose)
  AND (:after IS NULL OR seq < (SELECT seq FROM files WHERE tenant = :tenant AND id = :after))
ORDER BY seq DESC
LIMIT :limit;

-- name: update_file
UPDATE files SET filename = :filename, bytes = :bytes, status = :status, meta = :meta
WHERE tenant = :tenant AND id = :id;

-- name: insert_batch
INSERT INTO batches (tenant, id, dialect, state, idempotency_key, owner, lease_expires_at,
                     created_at, data)
VALUES (:tenant, :id, :dialect, :state, :idempotency_key, :owner, :lease_expires_at,
        :created_at, :data)
RETURNING seq;

-- name: get_batch
SELECT * FROM batches WHERE id = :id AND (:tenant IS NULL OR tenant = :tenant)
ORDER BY seq LIMIT 1;

-- name: list_batches
-- Newest first, after the batch :after (none when that batch does not exist).
SELECT * FROM batches
WHERE (:tenant IS NULL OR tenant = :tenant)
  AND (:dialect IS NULL OR dialect = :dialect)
  AND (:states IS NULL OR state IN (SELECT value FROM json_each(:states)))
  AND (:after IS NULL OR seq < (
        SELECT seq FROM batches WHERE id = :after AND (:tenant IS NULL OR tenant = :tenant)
        ORDER BY seq LIMIT 1))
ORDER BY seq DESC
LIMIT :limit;

-- name: active_batches
-- One runner's page: document workflow jobs (dialect 'unstructured') when :workflows,
-- every other batch when not, so that a backlog of one kind never fills the page of the
-- other's runner; paged on by seq.
SELECT * FROM batches
WHERE state NOT IN ('succeeded', 'failed', 'cancelled', 'expired')
  AND (dialect = 'unstructured') = :workflows
  AND (lease_expires_at IS NULL OR lease_expires_at < :now)
  AND seq > :after
ORDER BY seq
LIMIT :limit;

-- name: update_batch
-- Compare-and-set on state; the lease (owner, lease_expires_at) and seq stay.
UPDATE batches
SET dialect = :dialect, state = :state, idempotency_key = :idempotency_key,
    created_at = :created_at, data = :data
WHERE tenant = :tenant AND id = :id AND state = :expect;

-- name: insert_rows
-- insert_job for many rows of a batch in one statement (:rows, a JSON array of
-- insert_job's parameters): a row whose id exists is skipped. One statement, not one
-- per row, so the writer leaves the GIL once for the whole chunk.
INSERT INTO jobs (id, tenant, model, origin, service_class, priority, state, request, info,
                  inputs, max_attempts, created_at, deadline_at, batch_id, custom_id,
                  batch_line)
SELECT json_extract(value, '$.id'), json_extract(value, '$.tenant'),
       json_extract(value, '$.model'), json_extract(value, '$.origin'),
       json_extract(value, '$.service_class'), json_extract(value, '$.priority'),
       json_extract(value, '$.state'), json_extract(value, '$.request'),
       json_extract(value, '$.info'), json_extract(value, '$.inputs'),
       json_extract(value, '$.max_attempts'), json_extract(value, '$.created_at'),
       json_extract(value, '$.deadline_at'), json_extract(value, '$.batch_id'),
       json_extract(value, '$.custom_id'), json_extract(value, '$.batch_line')
FROM json_each(:rows)
WHERE true  -- an upsert after a SELECT needs a WHERE (SQLite's parser)
ORDER BY key
ON CONFLICT (id) DO NOTHING;

-- name: release_rows
-- Up to :chunk rows per statement, so other writes wait at most one chunk; the store
-- repeats it until fewer than :chunk rows change.
UPDATE jobs SET state = 'queued'
WHERE seq IN (
    SELECT seq FROM jobs
    WHERE tenant = :tenant AND batch_id = :batch_id AND state = 'validating'
    LIMIT :chunk);

-- name: batch_rows
SELECT * FROM jobs
WHERE tenant = :tenant AND batch_id = :batch_id AND batch_line > :after_line
  AND (:states IS NULL OR state IN (SELECT value FROM json_each(:states)))
ORDER BY batch_line
LIMIT :limit;

-- name: finish_rows
-- Every state but the terminal ones, listed so the index is probed once per state; up to
-- :chunk rows per statement, as in release_rows.
UPDATE jobs
SET state = :state, error = :error, owner = NULL, lease_expires_at = NULL, finished_at = :now
WHERE seq IN (
    SELECT seq FROM jobs
    WHERE tenant = :tenant AND batch_id = :batch_id
      AND state IN ('validating', 'queued', 'running', 'finalizing', 'cancelling')
    LIMIT :chunk);

-- OpenAI responses (issue 17)

-- console (issue 18) ----------------------------------------------------------------

-- name: finished_counts
-- The console's throughput plot: jobs that ended in [since, until), per interval of
-- :bucket seconds. Reads every job that ever ended (no index on finished_at); the
-- console asks at most every few seconds and keeps the answer meanwhile.
SELECT CAST((finished_at - :since) / :bucket AS INTEGER) AS bucket,
       COUNT(*) AS jobs,
       SUM(CASE WHEN state = 'succeeded' THEN 1 ELSE 0 END) AS succeeded,
       SUM(prompt_tokens) AS prompt_tokens,
       SUM(completion_tokens) AS completion_tokens
FROM jobs
WHERE finished_at >= :since AND finished_at < :until
  AND (:tenant IS NULL OR tenant = :tenant)
GROUP BY 1
ORDER BY 1;

-- Nodes (issue 15): node credentials and what the nodes report (inferq.core.nodes).

-- name: touch_node
UPDATE nodes
SET last_seen = :now, in_flight = :in_flight, version = COALESCE(:version, version),
    models = COALESCE(:models, models)
WHERE id = :id;

-- name: count_agreement
UPDATE nodes
SET compared = compared + 1,
    disagreed = disagreed + (CASE WHEN id IN (SELECT value FROM json_each(:disagreed))
                             THEN 1 ELSE 0 END)
WHERE id IN (SELECT value FROM json_each(:ids));

-- fair share (core/fairness.py, store/fair.py) ------------------------------------------

-- name: fair_waiting
-- The tenants with claimable work, each with its most urgent class and its row of
-- tenants: a skip scan of jobs_fair (a few probes per tenant), never a pass over the queue.
WITH RECURSIVE waiting(tenant) AS (
    SELECT MIN(tenant) FROM jobs WHERE state = 'queued'
    UNION ALL
    SELECT (SELECT MIN(j.tenant) FROM jobs AS j WHERE j.state = 'queued' AND j.tenant > w.tenant)
    FROM waiting AS w WHERE w.tenant IS NOT NULL
)
SELECT b.tenant, b.service_class, COALESCE(t.weight, 1.0) AS weight,
       COALESCE(t.vtime, 0.0) AS vtime, COALESCE(t.avg_cost, 0.0) AS avg_cost
FROM (
    SELECT w.tenant, (
        SELECT j.service_class FROM jobs AS j
        WHERE j.state = 'queued' AND j.tenant = w.tenant AND j.service_class <= :max_class
          AND (:models IS NULL OR j.model IN (SELECT value FROM json_each(:models)))
          AND (j.deadline_at IS NULL OR j.deadline_at > :now)
        ORDER BY j.service_class LIMIT 1) AS service_class
    FROM waiting AS w WHERE w.tenant IS NOT NULL
) AS b
LEFT JOIN tenants AS t ON t.tenant = b.tenant
WHERE b.service_class IS NOT NULL;

-- name: claim_tenant
-- Up to :quota of one tenant's queued jobs of one class, by priority then submission.
UPDATE jobs
SET state = 'running', owner = :owner, attempt = attempt + 1,
    lease_expires_at = :lease_until, claimed_at = :now
WHERE seq IN (
    SELECT seq FROM jobs
    WHERE state = 'queued' AND tenant = :tenant AND service_class = :service_class
      AND (:models IS NULL OR model IN (SELECT value FROM json_each(:models)))
      AND (deadline_at IS NULL OR deadline_at > :now)
    ORDER BY priority DESC, seq
    LIMIT :quota)
RETURNING *;

-- name: charge_share
-- A claim's charge: the virtual time raised to :floor (bounded credit), plus :amount.
INSERT INTO tenants (tenant, vtime) VALUES (:tenant, MAX(0, :floor) + :amount)
ON CONFLICT (tenant) DO UPDATE SET vtime = MAX(tenants.vtime, :floor) + :amount;

-- name: settle_share
-- What ended jobs really cost against what the claims charged (core/fairness.settled).
UPDATE tenants
SET vtime = vtime + (:tokens - (:jobs + :refunds)
        * (CASE WHEN avg_cost > 0 THEN avg_cost ELSE :default_cost END)) / weight,
    avg_cost = CASE WHEN :jobs > 0 THEN
        (CASE WHEN avg_cost > 0 THEN avg_cost ELSE :default_cost END) * (1 - :alpha)
        + :alpha * :tokens * 1.0 / :jobs
        ELSE avg_cost END
WHERE tenant = :tenant;

-- request and token limits (core/limits.py, store/sql_limits.py) ------------------------

-- name: ensure_buckets
INSERT INTO rate_buckets (subject, full_at)
SELECT value, 0 FROM json_each(:subjects) WHERE true
ON CONFLICT (subject) DO NOTHING;

-- name: lock_buckets
-- (the one writer is the lock)
SELECT subject, full_at FROM rate_buckets
WHERE subject IN (SELECT value FROM json_each(:subjects));

-- name: count_queued
-- Queued jobs that are not batch rows (classes before batch), of one tenant or all, at
-- most :limit of them (jobs_fair or jobs_claimable, walked no further than :limit).
SELECT COUNT(*) AS n FROM (
    SELECT 1 FROM jobs
    WHERE state = 'queued' AND service_class < 2 AND (:tenant IS NULL OR tenant = :tenant)
    LIMIT :limit
) AS q;

-- webhooks (issue 18) ----------------------------------------------------------------

-- name: insert_webhook_endpoint
INSERT INTO webhook_endpoints (id, tenant, url, events, secret, created_at)
VALUES (:id, :tenant, :url, :events, :secret, :created_at);

-- name: list_webhook_endpoints
SELECT * FROM webhook_endpoints
WHERE :tenant IS NULL OR tenant = :tenant
ORDER BY created_at, id;

-- name: delete_webhook_endpoint
DELETE FROM webhook_endpoints WHERE id = :id AND (:tenant IS NULL OR tenant = :tenant);

-- name: claim_webhook_deliveries
UPDATE webhook_deliveries SET owner = :owner, lease_expires_at = :until
WHERE id IN (
    SELECT id FROM webhook_deliveries
    WHERE state = 'pending' AND next_at <= :now
      AND (lease_expires_at IS NULL OR lease_expires_at < :now)
    ORDER BY next_at LIMIT :limit
);

-- name: record_webhook_attempt
UPDATE webhook_deliveries
SET state = :state, attempts = attempts + 1, next_at = :next_at, last_at = :at,
    last_status = :status, last_error = :error,
    delivered_at = CASE WHEN :state = 'delivered' THEN :at ELSE delivered_at END,
    owner = NULL, lease_expires_at = NULL
WHERE id = :id AND owner = :owner AND state = 'pending';

-- name: list_webhook_deliveries
SELECT * FROM webhook_deliveries
WHERE endpoint_id = :endpoint_id AND (:tenant IS NULL OR tenant = :tenant)
ORDER BY seq DESC LIMIT :limit;

-- retention (issue 18) ---------------------------------------------------------------

-- name: expired_files
-- Files past their expires_at, but never the input of an open batch.
SELECT * FROM files f
WHERE f.expires_at IS NOT NULL AND f.expires_at <= :now
  AND NOT EXISTS (
      SELECT 1 FROM batches b
      WHERE b.tenant = f.tenant
        AND b.state NOT IN ('succeeded', 'failed', 'cancelled', 'expired')
        AND json_extract(b.data, '$.input_file_id') = f.id)
ORDER BY f.expires_at LIMIT :limit;

-- name: finished_batches
SELECT * FROM batches
WHERE state IN ('succeeded', 'failed', 'cancelled', 'expired')
  AND COALESCE(json_extract(data, '$.finished_at'), created_at) < :cutoff
ORDER BY seq LIMIT :limit;

-- name: known_records
-- Which of these ids name a file, a dataset or a batch (of any tenant).
SELECT id FROM files WHERE id IN (SELECT value FROM json_each(:ids))
UNION
SELECT id FROM batches WHERE id IN (SELECT value FROM json_each(:ids));
