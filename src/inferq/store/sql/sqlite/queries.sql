-- Named queries of the SQLite store. Parameters are :named.

-- name: insert_job
INSERT INTO jobs (id, tenant, model, origin, service_class, priority, state, request, info,
                  inputs, max_attempts, created_at, deadline_at)
VALUES (:id, :tenant, :model, :origin, :service_class, :priority, :state, :request, :info,
        :inputs, :max_attempts, :created_at, :deadline_at)
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
-- order. A re-claimed job keeps its priority and records why it was re-run.
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
            WHERE state = 'queued'
              AND service_class <= :max_class
              AND (:models IS NULL OR model IN (SELECT value FROM json_each(:models)))
              AND (deadline_at IS NULL OR deadline_at > :now)
            ORDER BY service_class, priority DESC, seq
            LIMIT :limit)
        UNION ALL
        SELECT seq, service_class, priority FROM (
            SELECT seq, service_class, priority FROM jobs
            WHERE state = 'running' AND lease_expires_at < :now
              AND service_class <= :max_class
              AND (:models IS NULL OR model IN (SELECT value FROM json_each(:models)))
            ORDER BY service_class, priority DESC, seq
            LIMIT :limit)
    )
    ORDER BY service_class, priority DESC, seq
    LIMIT :limit
)
RETURNING *;

-- name: renew_lease
UPDATE jobs SET lease_expires_at = :until
WHERE id = :id AND owner = :owner AND attempt = :attempt AND state = 'running';

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

-- name: finish
UPDATE jobs
SET state = :state, error = COALESCE(:error, error), owner = NULL, lease_expires_at = NULL,
    finished_at = :now
WHERE id = :id AND state NOT IN ('succeeded', 'failed', 'cancelled', 'expired')
RETURNING *;

-- name: cancel_queued
UPDATE jobs SET state = 'cancelled', finished_at = :now
WHERE tenant = :tenant AND model = :model AND state = 'queued';

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
