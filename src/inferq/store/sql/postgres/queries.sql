-- Named queries of the PostgreSQL store. Parameters are :named (turned into $n).

-- name: insert_job
INSERT INTO jobs (id, tenant, model, origin, service_class, priority, state, request, info,
                  inputs, max_attempts, created_at, deadline_at)
VALUES (:id, :tenant, :model, :origin, :service_class, :priority, :state, :request::jsonb,
        :info::jsonb, :inputs::jsonb, :max_attempts, :created_at, :deadline_at)
RETURNING seq;

-- name: insert_jobs
-- insert_job for several jobs in one statement (the store's group commit); seq follows
-- the order of the arrays.
INSERT INTO jobs (id, tenant, model, origin, service_class, priority, state, request, info,
                  inputs, max_attempts, created_at, deadline_at)
SELECT id, tenant, model, origin, service_class, priority, state, request::jsonb,
       info::jsonb, inputs::jsonb, max_attempts, created_at, deadline_at
FROM unnest(:ids::text[], :tenants::text[], :models::text[], :origins::text[],
            :service_classes::smallint[], :priorities::int[], :states::text[],
            :requests::text[], :infos::text[], :inputs::text[], :max_attempts::int[],
            :created_ats::float8[], :deadline_ats::float8[]) WITH ORDINALITY
     AS j(id, tenant, model, origin, service_class, priority, state, request, info, inputs,
          max_attempts, created_at, deadline_at, n)
ORDER BY n
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

-- name: fail_exhausted_leases
-- Running jobs whose worker vanished after their last allowed attempt. The store runs
-- this as the first part of claim (the exhausted CTE there); the statement alone is
-- kept for tests/acceptance/test_scale_out.py, which checks its plan.
UPDATE jobs
SET state = 'failed',
    error = jsonb_build_object('code', 'worker_lost', 'message',
        format('the worker running attempt %s of %s stopped renewing its lease',
               attempt, max_attempts)),
    owner = NULL, lease_expires_at = NULL, finished_at = :now
WHERE state = 'running' AND lease_expires_at < :now AND attempt >= max_attempts;

-- name: claim
-- One statement: fail the running jobs whose worker vanished after their last allowed
-- attempt (fail_exhausted_leases), and claim the best queued jobs and the expired
-- leases with attempts left, merged in scheduling order and locked with SKIP LOCKED,
-- so concurrent workers never take the same row. A re-claimed job keeps its priority
-- and records why it was re-run.
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
    WHERE state = 'queued'
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

-- name: cancel_queued
UPDATE jobs SET state = 'cancelled', finished_at = :now
WHERE tenant = :tenant AND model = :model AND state = 'queued';

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

-- name: insert_key
INSERT INTO api_keys (id, name, tenant, prefix, key_hash, admin, created_at)
VALUES (:id, :name, :tenant, :prefix, :key_hash, :admin, :created_at);

-- name: find_key
SELECT * FROM api_keys WHERE key_hash = :key_hash;

-- name: list_keys
SELECT * FROM api_keys ORDER BY created_at;

-- name: revoke_key
UPDATE api_keys SET revoked_at = COALESCE(revoked_at, :now)
WHERE id = :key OR name = :key
RETURNING *;
