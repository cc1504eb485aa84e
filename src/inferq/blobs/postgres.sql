-- The queries of inferq.blobs.postgres (tables: store/sql/postgres/migrations/0003_blobs.sql).

-- name: tables_exist
SELECT to_regclass('blob_chunks') IS NOT NULL AND to_regclass('blob_uploads') IS NOT NULL
       AND to_regclass('blobs') IS NOT NULL;

-- name: start_upload
INSERT INTO blob_uploads (id, touched_at) VALUES ($1, $2);

-- name: add_chunk
-- Only while the upload is still pending (a sweep may have taken an abandoned one). KEY
-- SHARE keeps the sweep from deleting it meanwhile, yet lets a writer's inserts run side
-- by side (a touch of every insert would queue them on the row's lock).
INSERT INTO blob_chunks (upload_id, seq, data)
SELECT id, $2, $3 FROM blob_uploads WHERE id = $1 FOR KEY SHARE;

-- name: touch_upload
-- A writer's sign of life, now and then: the sweep spares what was touched lately.
UPDATE blob_uploads SET touched_at = $2 WHERE id = $1;

-- name: lock_key
-- Serialises the publishes and deletes of one name (class 0x1B10: blobs).
SELECT pg_advisory_xact_lock(6928, hashtext($1));

-- name: claim_upload
-- The upload stops being pending as it is published.
DELETE FROM blob_uploads WHERE id = $1;

-- name: current_upload
SELECT upload_id FROM blobs WHERE key = $1;

-- name: publish
INSERT INTO blobs (key, upload_id, size, created_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (key) DO UPDATE
    SET upload_id = EXCLUDED.upload_id, size = EXCLUDED.size, created_at = EXCLUDED.created_at;

-- name: retire_upload
-- Bytes no name points at any more: kept for the reads still streaming them, then swept.
INSERT INTO blob_uploads (id, touched_at) VALUES ($1, $2);

-- name: drop_name
DELETE FROM blobs WHERE key = $1 RETURNING upload_id;

-- name: drop_upload
WITH gone AS (DELETE FROM blob_uploads WHERE id = $1)
DELETE FROM blob_chunks WHERE upload_id = $1;

-- name: stale_uploads
DELETE FROM blob_uploads
WHERE id IN (
    SELECT id FROM blob_uploads WHERE touched_at < $1 ORDER BY touched_at LIMIT $2
    FOR UPDATE SKIP LOCKED
)
RETURNING id;

-- name: drop_chunks
DELETE FROM blob_chunks WHERE upload_id = ANY($1::text[]);

-- name: find
SELECT upload_id, size FROM blobs WHERE key = $1;

-- name: chunks
SELECT seq, data FROM blob_chunks WHERE upload_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3;

-- name: chunk_length
SELECT octet_length(data) FROM blob_chunks WHERE upload_id = $1 AND seq = 0;

-- name: names
-- One page of names under a prefix, after the last one seen (``inferq blobs migrate``).
SELECT key FROM blobs
WHERE key > $2 AND starts_with(key, $1)
ORDER BY key LIMIT $3;

-- name: created_at
-- When the name was last published (the retention sweep dates orphans by it).
SELECT created_at FROM blobs WHERE key = $1;
