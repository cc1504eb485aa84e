-- Named queries of the PostgreSQL store. Parameters are :named (turned into $n).

-- name: insert_job
INSERT INTO jobs (id, tenant, model, origin, service_class, priority, state, request, info,
                  inputs, max_attempts, created_at, deadline_at, batch_id, custom_id,
                  batch_line)
VALUES (:id, :tenant, :model, :origin, :service_class, :priority, :state, :request::jsonb,
        :info::jsonb, :inputs::jsonb, :max_attempts, :created_at, :deadline_at, :batch_id,
        :custom_id, :batch_line)
ON CONFLICT (id) DO NOTHING
RETURNING seq;

-- name: insert_jobs
-- insert_job for several jobs in one statement (the store's group commit, and the rows
-- of a batch); seq follows the order of the arrays. A job whose id exists is skipped
-- (not returned).
INSERT INTO jobs (id, tenant, model, origin, service_class, priority, state, request, info,
                  inputs, max_attempts, created_at, deadline_at, batch_id, custom_id,
                  batch_line)
SELECT id, tenant, model, origin, service_class, priority, state, request::jsonb,
       info::jsonb, inputs::jsonb, max_attempts, created_at, deadline_at, batch_id,
       custom_id, batch_line
FROM unnest(:ids::text[], :tenants::text[], :models::text[], :origins::text[],
            :service_classes::smallint[], :priorities::int[], :states::text[],
            :requests::text[], :infos::text[], :inputs::text[], :max_attempts::int[],
            :created_ats::float8[], :deadline_ats::float8[], :batch_ids::text[],
            :custom_ids::text[], :batch_lines::int[]) WITH ORDINALITY
     AS j(id, tenant, model, origin, service_class, priority, state, request, info, inputs,
          max_attempts, created_at, deadline_at, batch_id, custom_id, batch_line, n)
ORDER BY n
ON CONFLICT (id) DO NOTHING
RETURNING id, seq;

-- name: get_job
SELECT * FROM jobs WHERE id = :id AND (:tenant::text IS NULL OR tenant = :tenant);

-- name: list_jobs
SELECT * FROM jobs
WHERE (:tenant::text IS NULL OR tenant = :tenant)
  AND (:model::text IS NULL OR model = :model)
  AND (:states::text[] IS NULL OR state = ANY(:states))
ORDER BY seq DESC
LIMIT :limit;

-- name: claim
-- One statement: fail the running jobs whose worker vanished after their last allowed
-- attempt (the exhausted CTE: SQLite's fail_exhausted_leases; test_scale_out.py checks
-- its plan), and claim the best queued jobs and the expired leases with attempts left,
-- merged in scheduling order and locked with SKIP LOCKED, so concurrent workers never
-- take the same row. A re-claimed job keeps its priority and records why it was re-run.
-- The fair claim (store/fair.py) runs it with :queued false, for the expired leases alone.
WITH exhausted AS (
    UPDATE jobs
    SET state = 'failed',
        error = jsonb_build_object('code', 'worker_lost', 'message',
            format('the worker running attempt %s of %s stopped renewing its lease',
                   attempt, max_attempts)),
        owner = NULL, lease_expires_at = NULL, finished_at = :now
    WHERE state = 'running' AND lease_expires_at < :now AND attempt >= max_attempts
), queued AS (
    SELECT seq, service_class, priority FROM jobs
    WHERE state = 'queued' AND :queued::boolean
      AND service_class <= :max_class
      AND (:models::text[] IS NULL OR model = ANY(:models))
      AND (deadline_at IS NULL OR deadline_at > :now)
    ORDER BY service_class, priority DESC, seq
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), expired AS (
    SELECT seq, service_class, priority FROM jobs
    WHERE state = 'running' AND lease_expires_at < :now AND attempt < max_attempts
      AND service_class <= :max_class
      AND (:models::text[] IS NULL OR model = ANY(:models))
    ORDER BY service_class, priority DESC, seq
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT seq FROM (SELECT * FROM queued UNION ALL SELECT * FROM expired) AS c
    ORDER BY service_class, priority DESC, seq
    LIMIT :limit
)
UPDATE jobs
SET state = 'running',
    owner = :owner,
    attempt = jobs.attempt + 1,
    lease_expires_at = :lease_until,
    claimed_at = :now,
    error = CASE WHEN jobs.state = 'running' THEN
        jsonb_build_object('code', 'worker_lost', 'message',
            format('the worker running attempt %s of %s stopped renewing its lease',
                   jobs.attempt, jobs.max_attempts))
        ELSE jobs.error END
FROM picked
WHERE jobs.seq = picked.seq
RETURNING jobs.*;

-- name: renew_leases
UPDATE jobs SET lease_expires_at = :until
FROM unnest(:ids::text[], :owners::text[], :attempts::int[]) AS l(id, owner, attempt)
WHERE jobs.id = l.id AND jobs.owner = l.owner AND jobs.attempt = l.attempt
  AND jobs.state = 'running'
RETURNING jobs.id;

-- name: set_progress
UPDATE jobs SET info = info || :info::jsonb
WHERE id = :id AND owner = :owner AND attempt = :attempt AND state = 'running';

-- name: complete
UPDATE jobs
SET state = 'succeeded', result = :result::jsonb, info = info || '{"progress": 1}'::jsonb,
    prompt_tokens = :prompt_tokens,
    completion_tokens = :completion_tokens, cached_tokens = :cached_tokens,
    owner = NULL, lease_expires_at = NULL, finished_at = :now
WHERE id = :id AND owner = :owner AND attempt = :attempt AND state = 'running';

-- name: complete_many
-- complete for several leases (distinct job ids) in one statement; returns the ids
-- whose fence held.
UPDATE jobs
SET state = 'succeeded', result = c.result::jsonb, info = info || '{"progress": 1}'::jsonb,
    prompt_tokens = c.prompt_tokens,
    completion_tokens = c.completion_tokens, cached_tokens = c.cached_tokens,
    owner = NULL, lease_expires_at = NULL, finished_at = c.now
FROM unnest(:ids::text[], :owners::text[], :attempts::int[], :results::text[],
            :prompt_tokens::int[], :completion_tokens::int[], :cached_tokens::int[],
            :nows::float8[])
     AS c(id, owner, attempt, result, prompt_tokens, completion_tokens, cached_tokens, now)
WHERE jobs.id = c.id AND jobs.owner = c.owner AND jobs.attempt = c.attempt
  AND jobs.state = 'running'
RETURNING jobs.id;

-- name: fail
UPDATE jobs
SET state = CASE WHEN :retry::boolean AND attempt < max_attempts THEN 'queued' ELSE 'failed' END,
    finished_at = CASE WHEN :retry AND attempt < max_attempts THEN NULL ELSE :now::float8 END,
    error = :error::jsonb, owner = NULL, lease_expires_at = NULL
WHERE id = :id AND owner = :owner AND attempt = :attempt AND state = 'running';

-- name: lock_job
SELECT * FROM jobs WHERE id = :id AND (:tenant::text IS NULL OR tenant = :tenant) FOR UPDATE;

-- name: finish
UPDATE jobs
SET state = :state, error = COALESCE(:error::jsonb, error), owner = NULL,
    lease_expires_at = NULL, finished_at = :now
WHERE id = :id AND state NOT IN ('succeeded', 'failed', 'cancelled', 'expired')
RETURNING *;

-- name: expire_overdue
UPDATE jobs
SET state = 'expired',
    error = jsonb_build_object('code', 'timeout', 'message', 'the job passed its deadline'),
    owner = NULL, lease_expires_at = NULL, finished_at = :now
WHERE deadline_at IS NOT NULL AND deadline_at <= :now AND state IN ('queued', 'running')
RETURNING id;

-- name: metrics
SELECT
    COUNT(*) FILTER (WHERE state = 'running') AS running,
    COUNT(*) FILTER (WHERE state = 'queued') AS waiting,
    COUNT(*) AS total
FROM jobs
WHERE tenant = :tenant AND (:model::text IS NULL OR model = :model);

-- name: count_active
-- The metrics gauges, every tenant (or one, for the console): one SELECT per state, so
-- each can use that state's index (the claim's and the lease's partial indexes, the
-- batch rows' one).
SELECT model, service_class, state, in_batch, COUNT(*) AS n FROM (
    SELECT model, service_class, state, (batch_id IS NOT NULL) AS in_batch
    FROM jobs WHERE state = 'queued' AND (:tenant::text IS NULL OR tenant = :tenant)
    UNION ALL
    SELECT model, service_class, state, (batch_id IS NOT NULL) AS in_batch
    FROM jobs WHERE state = 'running' AND (:tenant::text IS NULL OR tenant = :tenant)
    UNION ALL
    SELECT model, service_class, state, (batch_id IS NOT NULL) AS in_batch
    FROM jobs WHERE state = 'validating' AND (:tenant::text IS NULL OR tenant = :tenant)
) AS active
GROUP BY model, service_class, state, in_batch;

-- name: insert_file
INSERT INTO files (tenant, id, kind, purpose, filename, bytes, status, meta, created_at)
VALUES (:tenant, :id, :kind, :purpose, :filename, :bytes, :status, :meta::jsonb, :created_at)
ON CONFLICT (tenant, id) DO NOTHING
RETURNING seq;

-- name: list_files
-- Newest first, after the record :after (none when that record does not exist).
SELECT * FROM files
WHERE tenant = :tenant AND kind = :kind
  AND (:purpose::text IS NULL OR purpose = :purpose)
  AND (:after::text IS NULL
       OR seq < (SELECT seq FROM files WHERE tenant = :tenant AND id = :after))
ORDER BY seq DESC
LIMIT :limit;

-- name: update_file
UPDATE files SET filename = :filename, bytes = :bytes, status = :status, meta = :meta::jsonb
WHERE tenant = :tenant AND id = :id;

-- name: insert_batch
-- Nothing when the tenant has a batch with this idempotency key (the store then reads
-- that one); a duplicate id is a unique violation.
INSERT INTO batches (tenant, id, dialect, state, idempotency_key, owner, lease_expires_at,
                     created_at, data)
VALUES (:tenant, :id, :dialect, :state, :idempotency_key, :owner, :lease_expires_at,
        :created_at, :data::jsonb)
ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING seq;

-- name: get_batch
SELECT * FROM batches WHERE id = :id AND (:tenant::text IS NULL OR tenant = :tenant)
ORDER BY seq LIMIT 1;

-- name: list_batches
-- Newest first, after the batch :after (none when that batch does not exist).
SELECT * FROM batches
WHERE (:tenant::text IS NULL OR tenant = :tenant)
  AND (:dialect::text IS NULL OR dialect = :dialect)
  AND (:states::text[] IS NULL OR state = ANY(:states))
  AND (:after::text IS NULL OR seq < (
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
  AND (dialect = 'unstructured') = :workflows::boolean
  AND (lease_expires_at IS NULL OR lease_expires_at < :now)
  AND seq > :after
ORDER BY seq
LIMIT :limit;

-- name: update_batch
-- Compare-and-set on state; the lease (owner, lease_expires_at) and seq stay.
UPDATE batches
SET dialect = :dialect, state = :state, idempotency_key = :idempotency_key,
    created_at = :created_at, data = :data::jsonb
WHERE tenant = :tenant AND id = :id AND state = :expect;

-- name: release_rows
-- Released rows are work for every process's workers: one notice wakes them.
WITH released AS (
    UPDATE jobs SET state = 'queued'
    WHERE tenant = :tenant AND batch_id = :batch_id AND state = 'validating'
    RETURNING 1
), counted AS (
    SELECT COUNT(*) AS n FROM released
)
SELECT n, CASE WHEN n > 0 THEN pg_notify('inferq_submitted', '') END AS notified
FROM counted;

-- name: batch_rows
SELECT * FROM jobs
WHERE tenant = :tenant AND batch_id = :batch_id AND batch_line > :after_line
  AND (:states::text[] IS NULL OR state = ANY(:states))
ORDER BY batch_line
LIMIT :limit;

-- name: finish_rows
-- Every state but the terminal ones, listed so the index is probed once per state.
UPDATE jobs
SET state = :state, error = :error::jsonb, owner = NULL, lease_expires_at = NULL,
    finished_at = :now
WHERE tenant = :tenant AND batch_id = :batch_id
  AND state IN ('validating', 'queued', 'running', 'finalizing', 'cancelling');

-- OpenAI responses (issue 17)

-- console (issue 18) ----------------------------------------------------------------

-- name: finished_counts
-- The console's throughput plot: jobs that ended in [since, until), per interval of
-- :bucket seconds. Reads every job that ever ended (no index on finished_at); the
-- console asks at most every few seconds and keeps the answer meanwhile.
SELECT FLOOR((finished_at - :since::float8) / :bucket::float8)::int AS bucket,
       COUNT(*) AS jobs,
       COUNT(*) FILTER (WHERE state = 'succeeded') AS succeeded,
       COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens,
       COALESCE(SUM(completion_tokens), 0) AS completion_tokens
FROM jobs
WHERE finished_at >= :since::float8 AND finished_at < :until::float8
  AND (:tenant::text IS NULL OR tenant = :tenant)
GROUP BY 1
ORDER BY 1;

-- Nodes (issue 15): node credentials and what the nodes report (inferq.core.nodes).

-- name: touch_node
UPDATE nodes
SET last_seen = :now, in_flight = :in_flight, version = COALESCE(:version, version),
    models = COALESCE(:models::jsonb, models)
WHERE id = :id;

-- name: count_agreement
UPDATE nodes
SET compared = compared + 1,
    disagreed = disagreed + (CASE WHEN id = ANY(:disagreed::text[]) THEN 1 ELSE 0 END)
WHERE id = ANY(:ids::text[]);

-- fair share (core/fairness.py, store/fair.py) ------------------------------------------

-- name: fair_waiting
-- The tenants with claimable work, each with its most urgent class and its row of
-- tenants: a skip scan of jobs_fair (a few probes per tenant), never a pass over the queue.
-- Here and in claim_fair the model test is written "(...) IS TRUE" so that it cannot be
-- an index condition: on jobs_tenant_model_state (tenant, model, state), a planner without
-- fresh statistics (a new tenant's batch, autovacuum behind) took it for one row, and
-- sorted the tenant's whole queue on every claim (60-80 ms over 97,000 rows).
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
          AND (:models::text[] IS NULL OR (j.model = ANY(:models)) IS TRUE)
          AND (j.deadline_at IS NULL OR j.deadline_at > :now)
        ORDER BY j.service_class LIMIT 1) AS service_class
    FROM waiting AS w WHERE w.tenant IS NOT NULL
) AS b
LEFT JOIN tenants AS t ON t.tenant = b.tenant
WHERE b.service_class IS NOT NULL;

-- name: claim_fair
-- The planned jobs (up to quota of each tenant's queued jobs of its class, by priority
-- then submission, locked with SKIP LOCKED as in claim), and in the same statement the
-- charge of each tenant that got some: its virtual time raised to :floor (bounded
-- credit), plus what it got times its :per_job charge. The tenants rows are written in
-- tenant order, the order every statement locks them in; a new row starts from 0, as
-- fair_waiting reads a missing one. The jobs come back in the plan's order.
-- The update finds the picked jobs by seq = ANY(ARRAY(...)): an index probe per job
-- whatever the planner guesses of LIMIT p.quota (a tenth of the queue). Joined to
-- picked, it updated them through a hash join over a scan of the whole table (or, as a
-- generic plan, a merge join along the whole primary key), on every claim.
WITH plan AS (
    SELECT * FROM unnest(:tenants::text[], :classes::smallint[], :quotas::int[],
                         :per_job::float8[]) WITH ORDINALITY
                  AS p(tenant, service_class, quota, per_job, n)
), picked AS (
    SELECT j.seq, j.priority, p.n
    FROM plan AS p
    CROSS JOIN LATERAL (
        SELECT seq, priority FROM jobs
        WHERE state = 'queued' AND tenant = p.tenant AND service_class = p.service_class
          AND (:models::text[] IS NULL OR (model = ANY(:models)) IS TRUE)
          AND (deadline_at IS NULL OR deadline_at > :now)
        ORDER BY priority DESC, seq
        LIMIT p.quota
        FOR UPDATE SKIP LOCKED) AS j
), claimed AS (
    UPDATE jobs
    SET state = 'running', owner = :owner, attempt = jobs.attempt + 1,
        lease_expires_at = :lease_until, claimed_at = :now
    WHERE jobs.seq = ANY(ARRAY(SELECT seq FROM picked))
    RETURNING jobs.*
), charged AS (
    INSERT INTO tenants (tenant, vtime)
    SELECT c.tenant, GREATEST(0, :floor::float8) + c.n * p.per_job
    FROM (SELECT tenant, COUNT(*) AS n FROM claimed GROUP BY tenant) AS c
    JOIN plan AS p ON p.tenant = c.tenant
    ORDER BY c.tenant
    ON CONFLICT (tenant) DO UPDATE
    SET vtime = GREATEST(tenants.vtime, :floor) + (EXCLUDED.vtime - GREATEST(0, :floor))
)
SELECT claimed.* FROM claimed JOIN picked ON picked.seq = claimed.seq
ORDER BY picked.n, picked.priority DESC, picked.seq;

-- name: settle_share
-- What ended jobs really cost against what the claims charged (core/fairness.settled).
UPDATE tenants
SET vtime = vtime + (:tokens::float8 - (:jobs::int + :refunds::int)
        * (CASE WHEN avg_cost > 0 THEN avg_cost ELSE :default_cost::float8 END)) / weight,
    avg_cost = CASE WHEN :jobs > 0 THEN
        (CASE WHEN avg_cost > 0 THEN avg_cost ELSE :default_cost END) * (1 - :alpha::float8)
        + :alpha * :tokens / :jobs
        ELSE avg_cost END
WHERE tenant = :tenant;

-- request and token limits (core/limits.py, store/sql_limits.py) ------------------------

-- name: ensure_buckets
-- A missing bucket is made first, so lock_buckets always has a row to lock (two
-- processes making one at once: the second waits for the first's commit, then skips).
INSERT INTO rate_buckets (subject, full_at)
SELECT s, 0 FROM unnest(:subjects::text[]) AS s ORDER BY s
ON CONFLICT (subject) DO NOTHING;

-- name: lock_buckets
SELECT subject, full_at FROM rate_buckets
WHERE subject = ANY(:subjects::text[])
ORDER BY subject
FOR UPDATE;

-- name: count_queued
-- Queued jobs that are not batch rows (classes before batch), of one tenant or all, at
-- most :limit of them (jobs_fair or jobs_claimable, walked no further than :limit).
SELECT COUNT(*) AS n FROM (
    SELECT 1 FROM jobs
    WHERE state = 'queued' AND service_class < 2 AND (:tenant::text IS NULL OR tenant = :tenant)
    LIMIT :limit
) AS q;

-- webhooks (issue 18) ----------------------------------------------------------------

-- name: insert_webhook_endpoint
INSERT INTO webhook_endpoints (id, tenant, url, events, secret, created_at)
VALUES (:id, :tenant, :url, :events::jsonb, :secret, :created_at);

-- name: list_webhook_endpoints
SELECT * FROM webhook_endpoints
WHERE :tenant::text IS NULL OR tenant = :tenant
ORDER BY created_at, id;

-- name: delete_webhook_endpoint
DELETE FROM webhook_endpoints WHERE id = :id AND (:tenant::text IS NULL OR tenant = :tenant);

-- name: claim_webhook_deliveries
-- SKIP LOCKED: deliverers of a fleet claiming at once each get their own deliveries.
UPDATE webhook_deliveries SET owner = :owner, lease_expires_at = :until
WHERE id IN (
    SELECT id FROM webhook_deliveries
    WHERE state = 'pending' AND next_at <= :now
      AND (lease_expires_at IS NULL OR lease_expires_at < :now)
    ORDER BY next_at LIMIT :limit
    FOR UPDATE SKIP LOCKED
);

-- name: record_webhook_attempt
UPDATE webhook_deliveries
SET state = :state, attempts = attempts + 1, next_at = :next_at, last_at = :at,
    last_status = :status, last_error = :error,
    delivered_at = CASE WHEN :state::text = 'delivered' THEN :at ELSE delivered_at END,
    owner = NULL, lease_expires_at = NULL
WHERE id = :id AND owner = :owner AND state = 'pending';

-- name: list_webhook_deliveries
SELECT * FROM webhook_deliveries
WHERE endpoint_id = :endpoint_id AND (:tenant::text IS NULL OR tenant = :tenant)
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
        AND b.data ->> 'input_file_id' = f.id)
ORDER BY f.expires_at LIMIT :limit;

-- name: finished_batches
SELECT * FROM batches
WHERE state IN ('succeeded', 'failed', 'cancelled', 'expired')
  AND COALESCE((data ->> 'finished_at')::float8, created_at) < :cutoff
ORDER BY seq LIMIT :limit;

-- name: known_records
-- Which of these ids name a file, a dataset or a batch (of any tenant).
SELECT id FROM files WHERE id = ANY(:ids::text[])
UNION
SELECT id FROM batches WHERE id = ANY(:ids::text[]);
